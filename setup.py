from setuptools import find_packages, setup

setup(
    name="caffe2torch",
    version="0.1.0",
    description="Read Caffe models, convert them to PyTorch, and verify the reproduction",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["caffe2torch", "caffe2torch.*"]),
    package_data={"caffe2torch.caffe_proto": ["caffe.proto"]},
    install_requires=[
        "torch>=2.1",
        "protobuf>=6.30",
        "numpy>=1.24",
        "h5py>=3.8",
        "click>=8.1",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            # 5.x dropped the Caffe importer; OpenCV's dnn is our independent Caffe runtime.
            "opencv-python-headless>=4.8,<5",
            # Pinned: the bindings test regenerates caffe_pb2.py and compares it byte for byte.
            "grpcio-tools==1.85.1",
        ],
    },
    entry_points={"console_scripts": ["caffe2torch=caffe2torch.cli:main"]},
)
