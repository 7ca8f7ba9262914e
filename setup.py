# The metadata lives in pyproject.toml; this file exists only to hand cffi its build scripts.
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder", "csrc/build.py:ffibuilder_norelo"])
