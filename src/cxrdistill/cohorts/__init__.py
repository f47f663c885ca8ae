"""Cohorts: dataset readers → one harmonized cohort table (see docs/formats.md, "Cohort table"), label policies, splits.

Public API (import from the submodules; this package imports nothing heavy on its own):
``readers.READERS`` (``"chexpert"``, ``"mimic"``, ``"nih"``, ``"padchest"``), ``importer.import_cohort``,
``validate.validate_cohort`` / ``load_cohort`` / ``save_cohort``, ``imagecheck.check_images``,
``policies.build_targets`` / ``POLICIES``, ``splits.assign_splits`` / ``split_from_file`` / ``check_no_leakage``.
"""
