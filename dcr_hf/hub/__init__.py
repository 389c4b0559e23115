"""DCR folders and the Hub, one job a module:

- `loading`: a model folder (or Hub repo) with its image processor;
- `results`: evaluation results as `EvalResult`s and the card's results tables;
- `cards`: model cards rendered from the `hub_cards/` templates, written and updated in a folder;
- `push`: the repo checked before any work, the files a push sends, push-or-explain.

The names below are re-exported, so `from dcr_hf.hub import X` reads the same for every job.
"""

from .cards import (
    CARD_KINDS,
    DEFAULT_TRAINING_DATA,
    TEMPLATES_DIR,
    model_hub_id,
    recipe_value,
    render_model_card,
    update_model_card_results,
    write_model_card,
)
from .loading import load_image_processor, load_model_and_processor
from .push import (
    PUSH_IGNORE_PATTERNS,
    HubPushError,
    files_to_push,
    hub_failures,
    hub_reason,
    prepare_hub_repo,
    push_folder_to_hub,
    push_later_command,
    push_or_explain,
)
from .results import (
    CARD_METRICS,
    NO_RESULTS,
    RESULTS_END,
    RESULTS_START,
    card_metrics,
    merge_eval_results,
    protocol_title,
    results_markdown,
    results_to_eval_results,
)

__all__ = [
    "CARD_KINDS",
    "CARD_METRICS",
    "NO_RESULTS",
    "RESULTS_END",
    "RESULTS_START",
    "DEFAULT_TRAINING_DATA",
    "PUSH_IGNORE_PATTERNS",
    "TEMPLATES_DIR",
    "HubPushError",
    "card_metrics",
    "files_to_push",
    "hub_failures",
    "hub_reason",
    "load_image_processor",
    "load_model_and_processor",
    "merge_eval_results",
    "model_hub_id",
    "prepare_hub_repo",
    "protocol_title",
    "push_folder_to_hub",
    "push_later_command",
    "push_or_explain",
    "recipe_value",
    "render_model_card",
    "results_markdown",
    "results_to_eval_results",
    "update_model_card_results",
    "write_model_card",
]
