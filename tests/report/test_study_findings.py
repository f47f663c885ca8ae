"""The report's findings: one sentence per question, each number taken from results.json."""
from cxrdistill.report.study_report import findings, render_report

RES = {
    "name": "t", "retention": 0.9, "speedup": 8.0,
    "teacher": {"mean_auc": 0.8, "audit": {"race": {"edema": {"auc_gap": 0.2, "worst_group_auc": 0.61},
                                                    "cardiomegaly": {"auc_gap": 0.05}},
                                           "sex": {"edema": {"auc_gap": 0.1}}}},
    "student": {"mean_auc": 0.72, "params": 1_090_000, "backbone": "mobilenetv3_small_050",
                "audit": {"race": {"edema": {"auc_gap": 0.15}}}},
    "propagation": {"student": {"reduced": 1, "amplified": 0, "inherited": 3, "inconclusive": 40, "not_tested": 9}},
    "fairness_attribute": "race",
    "fairness": {"erm": {"auc": 0.79, "auc_gap": 0.12},
                 "groupdro": {"auc": 0.78, "auc_gap": 0.10, "vs_erm": {"auc_gap": {"delta": -0.02, "p": 0.031}}}},
    "fair_distill": {"goal_lines": ["mixed, observed labels: goal met by balanced."]},
    "pretraining": [{"task": "mean", "labels": "observed", "init_label": "random", "auc": 0.6},
                    {"task": "mean", "labels": "observed", "init_label": "ImageNet", "auc": 0.7},
                    {"task": "mean", "labels": "true", "init_label": "random", "auc": 0.99}],
}


def test_each_finding_states_its_numbers():
    f = findings(RES)
    assert f[0] == ("Distillation: the student (mobilenetv3_small_050, 1.09 M parameters) keeps 90.0% of the "
                    "teacher's mean AUC (0.800 → 0.720) and runs 8.0× faster.")
    assert "widest AUC gap is by race on edema (0.200; worst group AUC 0.610); the student's gap there is 0.150" in f[1]
    assert f[2] == ("Inheritance, student against teacher over 44 tested bias quantities: 1 reduced, 0 amplified "
                    "(significant changes after correction), 3 inherited (equivalent within ± 0.02), 40 inconclusive "
                    "(the data cannot tell).")
    assert "smallest AUC gap groupdro (0.100 at AUC 0.780) vs ERM 0.120 at 0.790 (paired t-test over seeds p = 0.031)" in f[3]
    assert f[4] == "Fair distillation: mixed, observed labels: goal met by balanced."
    assert f[5] == "Pretraining: best initialisation ImageNet (mean AUC 0.700) of 2."  # observed labels only


def test_missing_sections_give_no_sentence_and_the_page_links_only_what_it_has():
    assert findings({"name": "x"}) == []
    html = render_report("/nonexistent", {"name": "x", "retention": 0.5, "teacher": {"mean_auc": 0.8},
                                          "student": {"mean_auc": 0.4}})
    assert 'href="#headline"' in html and 'href="#fairkd"' not in html and "Findings" in html
