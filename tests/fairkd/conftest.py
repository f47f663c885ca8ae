"""Session fixtures of the fair-distillation tests (helpers in fairkd_helpers.py)."""
import pytest

from fairkd_helpers import make_images, teacher_embeddings


@pytest.fixture(scope="session")
def tiny_images():
    """96 tiny images (labels, groups) and their fixed random-teacher embeddings."""
    imgs, y, g = make_images(96, seed=0)
    t = teacher_embeddings(imgs)
    return {"images": imgs, "y": y, "g": g, "t": t}
