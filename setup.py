"""fixmatch_jax: semi-supervised learning by pseudo-labelling in JAX/Flax."""
import setuptools

setuptools.setup(
    name="fixmatch_jax",
    version="0.1.0",
    description="Pseudo-labelling and FixMatch in JAX/Flax: paper reproductions you can trust.",
    packages=setuptools.find_packages(include=["fixmatch_jax", "fixmatch_jax.*"]),
    # The oneDNN convolutions' C++ source, compiled on first use (models/onednn.py).
    package_data={"fixmatch_jax.models": ["native/*.cc"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "orbax-checkpoint>=0.5",
        "ml_collections>=0.1.1",
        "clu>=0.0.10",
        "absl-py",
        "numpy",
        # tensorflow-cpu: the input pipeline only needs CPU TF; plain `tensorflow`
        # is a CUDA build that would fight JAX for the accelerator.
        "tensorflow-cpu>=2.15",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # TFDS builders import it on Python 3.11
        "tensorboard",  # clu's metric writers
        "scikit-learn",  # digits dataset, classic QDA reference
        "pillow",
        "matplotlib",
        # oneDNN (OpenMP build) and its headers, for the CPU convolutions of the wide
        # ResNets (config.train.cpu_convolutions="onednn"; models/onednn.py compiles
        # against them with the system's g++). Other platforms use Eigen's.
        "onednn-cpu-gomp==2023.2.0; sys_platform == 'linux' and platform_machine == 'x86_64'",
        "onednn-devel-cpu-gomp==2023.2.0; sys_platform == 'linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        # jupytext/nbclient/nbformat/ipykernel: tests/colabs_test.py runs the notebooks.
        "test": ["pytest", "pytest-xdist", "ruff", "jupytext", "nbclient", "nbformat",
                 "ipykernel"],
    },
)
