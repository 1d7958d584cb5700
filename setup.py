"""Builds the one compiled part: the fused field-attention CPU kernel of AutoInt (x86-64 with AVX2;
elsewhere the package installs without it and AutoInt runs the eager ops). Metadata: setup.cfg."""

import platform

from setuptools import setup

ext_modules, cmdclass = [], {}
if platform.machine() in ("x86_64", "AMD64"):
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext_modules = [
        CppExtension(
            "recsys_embed.models.layers._field_attention",
            ["models/layers/field_attention.cpp"],
            extra_compile_args=["-O3", "-mavx2", "-mfma"],
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
