"""``recsys-embed quantize``: a saved model with its table rows quantized after training.

The artifact keeps its pipeline, model weights and manifest; its tables become the
``quantized`` layout (:mod:`recsys_embed.compression.quantized`: fp16 / int8 / int4 / int2 rows
served by fbgemm's quantized CPU kernel), so it loads through :func:`load_model`, evaluates and
scores like any artifact, and refuses to train. Written like every artifact: a temp name, then a
rename.

Example::

    >>> quantize_model("runs/demo/model", "runs/demo/model-int8", bits=8)  # doctest: +SKIP
    QuantizeReport(bits=8, bytes_before=..., bytes_after=..., output='runs/demo/model-int8')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys_embed.compression.quantized import check_bits, quantize
from recsys_embed.jobs.model_io import load_model, save_model


@dataclass(frozen=True)
class QuantizeReport:
    """Table bytes of the source (weights and optimizer state as trained) and of the quantized rows."""

    bits: int
    bytes_before: int
    bytes_after: int
    output: str

    def summary(self) -> str:
        return (f"quantized tables to {self.bits} bits: {self.bytes_before:,} -> {self.bytes_after:,} bytes "
                f"({self.bytes_before / self.bytes_after:.1f}x smaller); saved to {self.output}")  # fmt: skip


def quantize_model(artifact_in: str | Path, artifact_out: str | Path, bits: int) -> QuantizeReport:
    """Load ``artifact_in``, quantize its tables' rows to ``bits`` (2, 4, 8 or 16) and save the
    model as ``artifact_out`` (another directory: the fp32 artifact stays). ``ValueError`` for other
    bits, tables already quantized, or a layout with no kernel rows (computed storage, a compressed group of a computed method)."""
    bits = check_bits(bits)
    if Path(artifact_out).resolve() == Path(artifact_in).resolve():
        raise ValueError(f"quantize: the output {artifact_out} is the input; keep the fp32 artifact (write another directory)")
    loaded = load_model(artifact_in)
    before = loaded.model.tables.memory_bytes()
    loaded.model.tables = quantize(loaded.model.tables, bits)
    manifest = loaded.manifest
    save_model(artifact_out, loaded.pipeline, loaded.model, manifest["layout"], manifest["model"], loaded.task, manifest["task_settings"])
    return QuantizeReport(bits, before, loaded.model.tables.memory_bytes(), str(artifact_out))
