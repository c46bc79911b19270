"""Public safety datasets -> evaluation-format rows, with splits held out by source.

Reads the raw copies under ``/work/shared/datasets`` (or ``$GUARDSTREAM_DATASETS``)
and turns them into rows of the project's evaluation format (one JSON object
per line, the side checked is the role of the last turn)::

    {"id": "harmbench:...", "conversation_id": "...", "source": "harmbench",
     "conversation": [{"role": "user", "content": "..."}],
     "label": "unsafe", "categories": ["O3"]}

Labels are for the Llama Guard 1 policy (O1 Violence and Hate, O2 Sexual
Content, O3 Criminal Planning, O4 Guns and Illegal Weapons, O5 Regulated or
Controlled Substances, O6 Self-Harm). A source's own category is mapped onto
those codes where it allows it (tables below); rows whose source category lies
outside LG1 (copyright, misinformation, defamation, privacy, specialised
advice, ...) are dropped rather than relabelled, since LG1 would call many of
them safe. Every unsafe row also gets the codes of
:func:`training.public_data.loaders.keyword_codes` (drugs -> O5, weapons -> O4,
self-harm -> O6), which is how O5 gets labels at all.

Split design (:func:`training.public_data.splits.build_splits`), deterministic:

* ``train`` / ``validation``: the TRAIN sources (including the project's benign
  templates, ``data/benign_templates.json``), split 85/15 by a SHA-256 hash of
  the conversation id (a prompt and its responses never straddle the split);
* ``heldout``: whole sources never used for training or for picking the
  threshold (``HELDOUT_SOURCES``), plus the held-out half of the project's own
  files (``SPLIT_SOURCES``: the benign hard negatives and the self-harm
  disclosures, split by hash);
* ``heldout_pairs``: 500 Anthropic hh-rlhf harmless-base preference pairs
  (unlabelled; a response scorer should rank ``rejected`` above ``chosen``). The
  other pairs of that file train the response head's ranking term
  (:func:`training.public_data.loaders.hh_rlhf_train_pairs`), so these 500 are
  held out by row, not by source.

Any training row whose checked text also occurs in a held-out row is removed
from training. ``alpaca_harmless`` (CC-BY-NC-4.0) is evaluation only and is
never written to a training split.
"""
