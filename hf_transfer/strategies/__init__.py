"""Transfer strategies. Importing this package registers every built-in strategy."""

# Registration order: kept as written, not sorted.
# isort: off
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

# isort: on
from hf_transfer.strategies.base import (
    RunContext,
    Strategy,
    StrategyConfig,
    available_strategies,
    build_strategy,
    register_strategy,
    strategy_config_class,
)

__all__ = [
    "RunContext",
    "Strategy",
    "StrategyConfig",
    "available_strategies",
    "build_strategy",
    "register_strategy",
    "strategy_config_class",
]
