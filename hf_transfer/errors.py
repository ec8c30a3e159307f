"""User-facing errors. The CLI prints these as one clear message, without a traceback."""


class HFTransferError(Exception):
    """Base class for errors caused by the user's input, each saying how to fix it."""


class ConfigError(HFTransferError):
    """A config key, value or file is wrong."""


class DataError(HFTransferError):
    """A dataset, split, column or file cannot be used."""


class ModelError(HFTransferError):
    """A checkpoint cannot be loaded or adapted."""


class ExportError(HFTransferError):
    """An export or push cannot go ahead."""


class TrainingError(HFTransferError):
    """Training cannot go on: its loss or weights became non-finite (too high a learning rate)."""


class WrongModality(ModelError):
    """A checkpoint is of another modality (text, image, audio) than the recipe needs."""


class WidthMismatch(ConfigError):
    """Layers chosen to be averaged into one feature vector have different widths."""
