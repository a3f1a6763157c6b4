"""The optional C++ text scanner (occlutrace_compute/meshes/_textscan.cpp); everything else is in
pyproject.toml. optional=True: where no C++17 compiler or Python headers are found the build
warns and goes on, and the readers use their Python path (meshes/native.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "occlutrace_compute.meshes._textscan",
            sources=["occlutrace_compute/meshes/_textscan.cpp"],
            language="c++",
            extra_compile_args=["-std=c++17", "-O3", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
