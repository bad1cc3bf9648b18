"""Zero-shot CLIP class prompts: CoOp's per-dataset templates and the ImageNet template ensembles.

The strings are data from the authors' repositories (KaiyangZhou/CoOp ``trainers/zsclip.py``
``CUSTOM_TEMPLATES`` and ``trainers/imagenet_templates.py``, which takes the 80 ImageNet templates
from OpenAI's CLIP notebook ``Prompt_Engineering_for_ImageNet.ipynb``); the MaPLe repository
ships the same files. How they are used, as CoOp's trainers do:

* ``coop`` (``ZeroshotCLIP``): the dataset's one template;
* ``coop_ensemble`` (``ZeroshotCLIP2``): the 7 selected ImageNet templates, plus the dataset's
  own template for every dataset but ImageNet; the text features of each template are
  L2-normalised, averaged over the templates and normalised again;
* ``coop_ensemble_80``: the same with the 80 ImageNet templates, the list ``ZeroshotCLIP2`` has
  commented out.
"""

from __future__ import annotations

from typing import Dict, List

from ..errors import ConfigError

#: CoOp's ZeroshotCLIP template per dataset, keyed by Dassl's dataset class name
DATASET_TEMPLATES: Dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

#: mmprompt's dataset names (the DATASETS registry) -> Dassl's class names, the keys above
DASSL_NAMES: Dict[str, str] = {
    "oxford_pets": "OxfordPets",
    "oxford_flowers": "OxfordFlowers",
    "fgvc_aircraft": "FGVCAircraft",
    "dtd": "DescribableTextures",
    "eurosat": "EuroSAT",
    "stanford_cars": "StanfordCars",
    "food101": "Food101",
    "sun397": "SUN397",
    "caltech101": "Caltech101",
    "ucf101": "UCF101",
    "imagenet": "ImageNet",
    "imagenet_sketch": "ImageNetSketch",
    "imagenet_v2": "ImageNetV2",
    "imagenet_a": "ImageNetA",
    "imagenet_r": "ImageNetR",
}

#: the 80 ImageNet templates of OpenAI's CLIP (CoOp's IMAGENET_TEMPLATES)
IMAGENET_TEMPLATES: List[str] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
]

#: the 7 of them CoOp's ZeroshotCLIP2 ensembles (IMAGENET_TEMPLATES_SELECT)
IMAGENET_TEMPLATES_SELECT: List[str] = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]

#: values of MODEL.CLIP.ZERO_SHOT_TEMPLATES besides "" (which uses MODEL.CLIP.TEMPLATE)
TEMPLATE_SETS = ("coop", "coop_ensemble", "coop_ensemble_80")


def dassl_dataset_name(dataset: str) -> str:
    """Dassl's class name for a dataset given by mmprompt's name or by Dassl's own."""
    if dataset in DATASET_TEMPLATES:
        return dataset
    if dataset in DASSL_NAMES:
        return DASSL_NAMES[dataset]
    raise ConfigError(
        f"CoOp has no zero-shot template for the dataset '{dataset}' (it has templates for "
        f'{", ".join(DASSL_NAMES)}). Set MODEL.CLIP.ZERO_SHOT_TEMPLATES "" and give the class '
        f"prompt as MODEL.CLIP.TEMPLATE."
    )


def zero_shot_templates(template_set: str, dataset: str) -> List[str]:
    """The class-prompt templates a zero-shot CLIP averages over (one template: no averaging);
    ``template_set`` is one of :data:`TEMPLATE_SETS` (MODEL.CLIP.ZERO_SHOT_TEMPLATES)."""
    if template_set not in TEMPLATE_SETS:
        raise ConfigError(
            f"Unknown MODEL.CLIP.ZERO_SHOT_TEMPLATES '{template_set}': use \"\" (MODEL.CLIP.TEMPLATE), "
            f"{', '.join(TEMPLATE_SETS)}."
        )
    name = dassl_dataset_name(dataset)
    own = DATASET_TEMPLATES[name]
    if template_set == "coop":
        return [own]
    ensemble = IMAGENET_TEMPLATES_SELECT if template_set == "coop_ensemble" else IMAGENET_TEMPLATES
    return list(ensemble) + ([own] if name != "ImageNet" else [])
