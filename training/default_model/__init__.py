"""Rebuild the shipped default guard model (``models/default``) from the public datasets.

    python -m training.default_model --out models/default [--splits DIR]
    python -m training.default_model --out DIR --adapter-from models/default/adapter  # heads only
    python -m training.default_model --out DIR --with-candidates  # + real-world candidates

Steps (hash splits, fixed seed and grids, lbfgs logistic regressions):

1. rows from :mod:`training.public_data` (train / validation / held-out sources);
2. a LoRA adapter for the encoder, trained on the train split
   (:mod:`training.encoder_finetune`, three epochs, ~40 min on one thread; with
   ``--with-candidates`` one epoch over at most 600 rows per (source, label, side),
   :func:`training.default_model.recipe.adapter_rows`), merged in;
   then embed train and validation rows with it (the serving code);
3. per side (prompt, response): pick the L2 strength ``C`` on the validation
   split (AUPRC), fit a logistic regression on train with
   :func:`training.default_model.recipe.source_weights` (sources and labels
   balanced); the response head also learns to rank the hh-rlhf training
   pairs (more harmful answer higher);
4. category heads (O1..O6): one-vs-rest logistic regressions on the unsafe
   training rows that carry categories;
5. the threshold: per side, the lowest one whose false-positive rate on the safe
   rows of EACH validation source of that side is at most ``TARGET_FPR``
   (:func:`training.default_model.thresholds.pick_threshold`), except the near-miss
   sources (``catalogue.NEAR_MISS_SOURCES``); each head's
   bias is then shifted so that this point is ``p_unsafe = THRESHOLD`` (0.5), the
   one threshold the manifest ships;
6. write ``heads.npz`` + ``guardstream-model.json``, load it back through
   :func:`guard.loaders.load_guard` and measure it on the held-out sources
   (AUPRC per side, FPR on benign hard negatives, per-category AUPRC, hh-rlhf
   pair accuracy, turns/s); the report goes into the manifest.
"""
