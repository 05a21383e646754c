"""``bucketvision models register``: a user's model of any family, with its serving card.

The flags are the card's fields (``models.cards.CARD_FIELDS``, dashes for
underscores); ``--card card.json`` gives the same fields from a file, and a flag
wins over the file. docs/bring-your-own-model.md walks through each family.
"""

from __future__ import annotations

import argparse
from typing import Any

from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import FAMILY_TASKS
from bucketvision.producer.cli_support import clients

# flag, card field, type, help
_CARD_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--signature", str, "SavedModel: the serving signature to call (default serving_default)"),
    (
        "--input-size",
        str,
        "HxW the images are resized to (default: the model's input shape;"
        " required when that is dynamic)",
    ),
    ("--channels", int, "1 (grey) or 3 (RGB) (default: the model's input channels)"),
    ("--input-dtype", str, "float32 or uint8 (default: the model input's dtype)"),
    (
        "--preprocess",
        str,
        "unit (x/255), symmetric (x/127.5-1), imagenet (x/255, then ImageNet"
        " mean/std), caffe (BGR minus ImageNet mean) or raw (default unit; raw for uint8 input)",
    ),
    (
        "--resize",
        str,
        "stretch, letterbox or center-crop (classify only) (default: stretch for"
        " classify, letterbox for detect and segment)",
    ),
    (
        "--outputs",
        str,
        "classify: probabilities|logits; detect: native|tfod (TF Object Detection"
        " API); segment: probabilities|logits|class-map (default: the first)",
    ),
    ("--input-name", str, "the image input, when the model has several"),
    ("--output-name", str, "the output to read, when the model has several"),
    ("--latent-dim", int, "generate: length of the latent vector (default: the input's)"),
    ("--latent-input", str, "generate: the latent input, when there are several"),
    ("--label-input", str, "generate: the class-label input of a conditional generator"),
    ("--output-range", str, "generate: symmetric (-1..1, tanh) or unit (0..1) (default symmetric)"),
    ("--score-threshold", float, "detect: lowest score reported (default 0.3)"),
    ("--max-detections", int, "detect: most boxes per image (default 100)"),
    ("--review-below", float, "jobs route items less confident than this to review (default none)"),
)


def add_register(models_sub: Any) -> None:
    """The ``models register`` parser."""
    register = models_sub.add_parser(
        "register",
        help="add your own model (.keras or SavedModel) as a new version",
        description="Validate a model with one forward pass and add it to the registry.",
    )
    register.add_argument("name", help="the model name; the version is the next one")
    register.add_argument("--task", required=True, choices=FAMILY_TASKS, help="its family")
    register.add_argument(
        "--file",
        required=True,
        help="a .keras file, or a SavedModel: a directory or a .tar.gz/.zip of one; local or s3://",
    )
    register.add_argument("--card", help="a JSON file of card fields (the flags' names)")
    register.add_argument("--labels", help="comma-separated class labels, in output order")
    register.add_argument("--labels-file", help="one label per line, or a JSON list")
    for flag, kind, text in _CARD_FLAGS:
        register.add_argument(flag, type=kind, help=text)
    register.add_argument("--promote", action="store_true", help="make it CURRENT now")
    register.add_argument(
        "--allow-unsafe",
        action="store_true",
        help="accept a model that only loads with Keras safe mode off (e.g. a Lambda layer);"
        " workers still refuse it unless BV_UNSAFE_MODELS names it",
    )


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.models import registration

    fields = registration.read_card_file(args.card)
    for flag, _, _ in _CARD_FLAGS:
        field = flag[2:].replace("-", "_")
        value = getattr(args, field)
        if value is not None:
            fields[field] = value
    labels = registration.read_labels(args.labels, args.labels_file)
    ref = registration.register_model(
        clients(settings)["registry"],
        args.name,
        task=args.task,
        path=args.file,
        labels=labels,
        fields=fields,
        promote=True if args.promote else None,
        allow_unsafe=args.allow_unsafe,
    )
    print(f"registered {ref} ({ref.card['status']})")
    return 0
