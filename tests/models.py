"""Tiny DCR configurations and training command lines shared by the tests (fast on a CPU)."""

from dcr_hf import DCRConfig


def tiny_config(**overrides) -> DCRConfig:
    values = dict(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 16, 32],
        embedding_size=32,
        branch_hidden_size=32,
        image_size=32,
        low_resolution_sizes=[8, 12],
        num_labels=5,
    )
    values.update(overrides)
    return DCRConfig(**values)


#: `train_hf.py` options of a tiny quickstart run (the README's `--synthetic_*` options), without
#: the device, the step count or the evaluation and saving settings.
TINY_TRAINING = [
    "--synthetic_num_identities", "6", "--synthetic_images_per_identity", "3", "--synthetic_num_pairs", "20",
    "--image_size", "48", "--low_resolution_sizes", "8", "12", "--depths", "1", "1", "1", "1",
    "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16", "--per_device_train_batch_size", "6",
    "--dataloader_num_workers", "0", "--disable_tqdm", "true",
]
