"""Run configurations: one POC YAML + a profile + an encoder (+ a variant, a fold, overrides) -> RunConfig.

Each POC is one file, ``heritage/configs/<poc>.yaml``::

    title: ...                     # one line for reports
    main_variant: dice_balanced    # optional: the name the main configuration has in an ablation
    settings: {...}                # shared settings (RunConfig fields)
    encoders: {convnext_tiny: {...}, ...}   # the POC's encoders, in order, with their overrides
    variants: {dice: {encoders: [...], ...}, ...}   # named overrides; `encoders` restricts a variant
    profiles:
      full:  {settings: {...}, encoders: {...}, variants: {...}, plan: {...}}
      smoke: {settings: {...}, encoders: {...}, variants: {...}, plan: {...}}

Resolution, later layers win (the more specific setting wins, and inside each level the profile's
entry refines the shared one)::

    settings -> profile.settings -> encoders[e] -> profile.encoders[e]
             -> variants[v] -> profile.variants[v] -> overrides

The fields that select a run (:data:`SELECTION_FIELDS`: poc, profile, encoder, variant, fold) come
from the arguments of :func:`load_run_config` or from its overrides (``fold=fold2``), never from a
POC file; given both ways with different values they are refused, never silently dropped.

A profile's ``plan`` says which runs :func:`plan` makes: ``encoders``, ``folds`` and ``variants``
(lists, or ``all``; variants default to none). Folds come from the data folder's split manifest;
``folds`` may also map protocols to lists (``{kfold: [fold0, fold1]}``) when variants run on another
protocol (the flagship's ``seeds_protocol`` on ``leaky``): protocols it does not name plan all their folds.

The learning rate follows the linear scaling rule ``lr = base_lr * batch_size / base_batch_size``
unless ``lr`` is set explicitly.

Modules: :mod:`~heritage.config.run_config` (:class:`RunConfig`, its validation, hash and run folder),
:mod:`~heritage.config.poc_files` (the POC files and their structure), :mod:`~heritage.config.resolve`
(:func:`load_run_config`, :func:`plan`). This package re-exports their public names (``config.X``).
"""

from heritage.config.poc_files import available_pocs, load_poc, poc_encoders, poc_path
from heritage.config.resolve import load_run_config, manifest_folds, parse_overrides, plan, plan_settings
from heritage.config.run_config import (AMP_MODES, CHANNELS_LAST_MODES, DEFAULT_DATA_DIRS, DEFAULT_RUNS_ROOT,
                                        DERIVED_KEYS, NATIVE, PATH_FIELDS, PROFILES, SAFE_NAME, SAMPLING_MODES,
                                        SELECTION_FIELDS, UNHASHED_FIELDS, ConfigError, RunConfig,
                                        data_fingerprint, run_dir)

__all__ = ["AMP_MODES", "CHANNELS_LAST_MODES", "DEFAULT_DATA_DIRS", "DEFAULT_RUNS_ROOT", "DERIVED_KEYS", "NATIVE",
           "PATH_FIELDS", "PROFILES", "SAFE_NAME", "SAMPLING_MODES", "SELECTION_FIELDS", "UNHASHED_FIELDS",
           "ConfigError", "RunConfig", "available_pocs", "data_fingerprint", "load_poc", "load_run_config",
           "manifest_folds", "parse_overrides", "plan", "plan_settings", "poc_encoders", "poc_path", "run_dir"]
