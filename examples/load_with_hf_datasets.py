"""Export a dataset for Hugging Face `datasets` and load it back with an Image feature.

    wanbatch export datasets/quickstart --format hf --to exports/quickstart-hf
    python examples/load_with_hf_datasets.py exports/quickstart-hf
"""

import sys

from datasets import load_dataset

folder = sys.argv[1] if len(sys.argv) > 1 else "exports/quickstart-hf"
dataset = load_dataset("parquet", data_files=f"{folder}/data/*.parquet", split="train")
print(dataset)
print(dataset.features["image"])
first = dataset[0]
print(first["prompt"], first["image"].size)  # a PIL image, decoded on access
