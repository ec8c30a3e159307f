"""Transfer strategies. Importing this package registers every built-in strategy."""

from hf_transfer.strategies import full  # noqa: F401
from hf_transfer.strategies import freeze  # noqa: F401
from hf_transfer.strategies import partial  # noqa: F401
from hf_transfer.strategies import gradual_unfreeze  # noqa: F401
from hf_transfer.strategies import lp_ft  # noqa: F401
from hf_transfer.strategies import auto  # noqa: F401
from hf_transfer.strategies import lora  # noqa: F401
from hf_transfer.strategies import ia3  # noqa: F401
from hf_transfer.strategies import adapter  # noqa: F401
from hf_transfer.strategies import feature_extraction  # noqa: F401
from hf_transfer.strategies import contrastive  # noqa: F401
from hf_transfer.strategies import static  # noqa: F401
from hf_transfer.run_folder import register_model_loader
from hf_transfer.strategies.base import Strategy, StrategyConfig, available_strategies  # noqa: I001
from hf_transfer.strategies.base import build_strategy, register_strategy, strategy_config_class



def _attach_feature_classifier(run, model):
    # svm / knn / multi-module-head feature-extraction runs keep their classifier beside the model.
    return feature_extraction.attach_feature_classifier(run.path, model, allow_pickle=run.allow_pickle)


register_model_loader(_attach_feature_classifier)

__all__ = [
    "Strategy",
    "StrategyConfig",
    "available_strategies",
    "build_strategy",
    "register_strategy",
    "strategy_config_class",
]
