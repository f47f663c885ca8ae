"""GroupDRO trained by the shared trainer, run under torchrun by test_fairness_methods (not collected by pytest).
Writes each rank's final group weights q to OUT/q<rank>.json."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from fairness_helpers import fast_cfg, head, make_data  # noqa: E402

from cxrdistill.fairness.methods.groupdro import GroupDRO  # noqa: E402
from cxrdistill.training.trainer import Trainer  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = GroupDRO(step_size=0.5, balanced_sampling=False)
    trainer = Trainer(head(), method, make_data(384, 0, minority=0.2), None, fast_cfg(epochs=2))
    trainer.fit()
    (out / f"q{trainer.dist.rank}.json").write_text(json.dumps(method.q.tolist()))
