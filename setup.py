"""Build hook: the cffi extension vmmpy._vmm compiles libvmm (csrc/) in API mode."""

from setuptools import setup

setup(cffi_modules=["vmmpy/_build_ffi.py:ffibuilder"])
