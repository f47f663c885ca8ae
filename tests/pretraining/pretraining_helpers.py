"""Constants shared by the pretraining tests."""
BACKBONE = "mobilenetv3_small_050"  # 0.6 M parameters: fast at 32 px
TASKS = ["pleural_effusion", "cardiomegaly", "edema"]
TINY_TRAIN = {"epochs": 1, "batch_size": 32, "progress": False}
