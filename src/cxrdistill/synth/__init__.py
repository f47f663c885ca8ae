"""Synthetic chest radiographs with planted, known bias (a CheXpert-layout dataset or images in memory).

    from cxrdistill import synth
    csv = synth.generate("data/synth", n=1000, size=128, seed=0, scenario="underdiagnosis", workers=2)
    images, meta = synth.render_batch(64, size=64, seed=0, scenario="shortcut")
    one = synth.render(128, seed=3, findings=["pleural_effusion"], view="AP")
"""
from cxrdistill.synth.generate import chexpert_csv, cohort_table, generate, render_batch, specs_from_table
from cxrdistill.synth.render import ImageSpec, Rendered, ctr_from_masks, render, render_spec
from cxrdistill.synth.sample import CHEXPERT_COLUMNS, sample_cohort
from cxrdistill.synth.scenario import (DEFAULT_PREVALENCE, MANIFESTATIONS, SCENARIOS, Group, Scenario, Shortcut, Site,
                                       load_scenario, scenario_from_dict)

__all__ = [
    "generate", "render_batch", "render", "render_spec", "ImageSpec", "Rendered", "ctr_from_masks", "sample_cohort",
    "specs_from_table", "chexpert_csv", "cohort_table", "CHEXPERT_COLUMNS", "Scenario", "Group", "Site", "Shortcut",
    "SCENARIOS", "DEFAULT_PREVALENCE", "MANIFESTATIONS", "load_scenario", "scenario_from_dict",
]
