"""Builds the optional compiled loops of ``twotower.index._kernels`` (per-query exclusions;
README, "Search"). Everything else is in pyproject.toml. Without a C compiler the build of
the extension fails quietly (``optional``) and twotower takes its numpy path."""
import numpy
from setuptools import Extension, setup

setup(ext_modules=[Extension("twotower.index._kernels", ["src/twotower/index/_kernels.c"],
                             include_dirs=[numpy.get_include()], optional=True)])
