"""Build script: the Python package plus the compiled kernels ``pytorch_quantization._C``.

``pip install -e . --no-build-isolation`` compiles ``csrc/`` against the installed torch:
the CPU kernels wherever a C++ compiler exists, the CUDA kernels too when torch is a CUDA build
and a CUDA toolkit is found (``CUDA_HOME`` or ``/usr/local/cuda``). When compilation fails the
install still succeeds and the package runs on its pure-PyTorch reference kernels.
Environment: ``TORCH_CUDA_ARCH_LIST`` (default "8.0;9.0+PTX"), ``MAX_JOBS`` (ninja parallelism),
``PYTORCH_QUANTIZATION_NO_EXT=1`` to skip the extension.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-fast-math"]
NVCC_FLAGS = ["-O3", "--fmad=false", "-Xcompiler", "-ffp-contract=off"]


def _say(message):
    print(f"pytorch_quantization build: {message}", file=sys.stderr)


def _cuda_home():
    """The CUDA toolkit to use: the first of CUDA_HOME, CUDA_PATH, /usr/local/cuda that holds bin/nvcc, else None."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return home
    return None


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions():
    """([extension], build_ext class, description), or ([], None, reason) when nothing can be built."""
    if os.environ.get("PYTORCH_QUANTIZATION_NO_EXT") == "1":
        return [], None, "extension skipped (PYTORCH_QUANTIZATION_NO_EXT=1)"
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as error:
        return [], None, f"torch is not importable ({error}); install torch first and use --no-build-isolation"
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    kwargs = {"extra_compile_args": {"cxx": list(CXX_FLAGS)}, "extra_link_args": ["-fopenmp"]}
    cuda_home = _cuda_home() if torch.version.cuda else None
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        cpp_extension.CUDA_HOME = cuda_home  # a CPU-only import of torch leaves it None
        kwargs["extra_compile_args"]["nvcc"] = list(NVCC_FLAGS)
        extension = cpp_extension.CUDAExtension("pytorch_quantization._C", sources + _sources("csrc/cuda/*.cu"),
                                                **kwargs)
        kind = f"CPU+CUDA kernels (CUDA {torch.version.cuda}, arch {os.environ['TORCH_CUDA_ARCH_LIST']})"
    else:
        extension = cpp_extension.CppExtension("pytorch_quantization._C", sources, **kwargs)
        kind = "CPU kernels only" + (" (torch is a CUDA build but no CUDA toolkit was found)" if torch.version.cuda else "")
    return [extension], _tolerant_build_ext(cpp_extension.BuildExtension, kind), kind


def _tolerant_build_ext(base, kind):
    """A BuildExtension that reports what it built and turns a compile failure into a warning."""

    class TolerantBuildExt(base):
        def run(self):
            try:
                super().run()
                _say(f"built {kind}")
            except Exception as error:  # pylint: disable=broad-except
                _say(f"WARNING: compiling the extension failed ({error}); installed without it, "
                     "the package uses its pure-PyTorch reference kernels")

    return TolerantBuildExt.with_options(use_ninja=shutil.which("ninja") is not None or _has_ninja_module())


def _has_ninja_module():
    try:
        import ninja  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        return True
    except ImportError:
        return False


EXT_MODULES, BUILD_EXT, DESCRIPTION = _extensions()
_say(DESCRIPTION if BUILD_EXT is None else f"will build {DESCRIPTION}")

setup(
    name="pytorch_quantization",
    version="2.3.0.dev0",
    description="Maintained drop-in replacement for NVIDIA pytorch-quantization: fake quantization, "
    "calibration, PTQ and TensorRT Q/DQ export",
    packages=find_packages(include=["pytorch_quantization", "pytorch_quantization.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "numpy", "pyyaml", "tqdm"],
    ext_modules=EXT_MODULES,
    cmdclass={"build_ext": BUILD_EXT} if BUILD_EXT else {},
)
