"""Build script: the pure-Python package (the compiled extension is added by csrc build logic)."""
from setuptools import find_packages, setup

setup(
    name="pytorch_quantization",
    version="2.3.0.dev0",
    description="Maintained drop-in replacement for NVIDIA pytorch-quantization: fake quantization, "
    "calibration, PTQ and TensorRT Q/DQ export",
    packages=find_packages(include=["pytorch_quantization", "pytorch_quantization.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "numpy", "scipy", "pyyaml", "tqdm"],
)
