"""Builds the compiled parts, three CPU kernels for x86-64 with AVX2: AutoInt's fused field
attention, DIN's Dice and QR's row product (elsewhere the package installs without them and the
models and QR run their Python paths). Metadata: setup.cfg."""

import platform

from setuptools import setup

ext_modules, cmdclass = [], {}
if platform.machine() in ("x86_64", "AMD64"):
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext_modules = [
        CppExtension(
            f"recsys_embed.models.layers._{name}",
            [f"models/layers/{name}.cpp"],
            depends=["models/layers/avx2_math.h"],
            extra_compile_args=["-O3", "-mavx2", "-mfma"],
        )
        for name in ("field_attention", "dice")
    ] + [
        CppExtension(
            "recsys_embed.compression._row_product",
            ["recsys_embed/compression/row_product.cpp"],
            extra_compile_args=["-O3", "-mavx2", "-mfma"],
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
