"""Builds the compiled parts, three CPU kernels for x86-64 with AVX2: AutoInt's fused field
attention, DIN's Dice and the compression methods' ops (QR's row product, double hashing's rows; elsewhere
the package installs without them and the models and methods run their Python paths). Metadata: setup.cfg."""

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
            "recsys_embed.compression._kernels",
            ["recsys_embed/compression/kernels.cpp"],
            extra_compile_args=["-O3", "-mavx2", "-mfma"],
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
