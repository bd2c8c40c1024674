"""The build's one dynamic part, the compiled log parse (build_support/mail_exporter_build.py)."""

from mail_exporter_build import ext_modules
from setuptools import setup

setup(ext_modules=ext_modules())
