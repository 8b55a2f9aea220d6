"""(Run as ``python benchmarks/check_bf16_inference.py [RUNS_FOLDER]``; about 10 minutes on 2 cores.)

Does bf16 inference change what a cpu-profile model scores? Train LAA-Net and MAT at the cpu
profile for 2 epochs with seeds 0 and 1 (float32, as the book does), then score each run's
validation set (pseudo-fakes of held-out people + the held-out families) in float32 and under
bf16 autocast + channels_last: AUC differences against the seed spread."""
import sys, time
from pathlib import Path
import numpy as np, torch
from dfattn.train import TrainConfig, Trainer
from dfattn.evaluate import predict, binary_metrics, evaluate_frames

rows = []
for model in ("laanet", "mat"):
    for seed in (0, 1):
        c = TrainConfig(model=model, profile="cpu", epochs=2, seed=seed, progress=False)
        t = Trainer(c, str(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bf16_check") / f"{model}_{seed}"))
        t.fit()
        sets = t.val_sets()
        for amp in (None, torch.bfloat16):
            start = time.perf_counter()
            df = predict(t.model, sets["val"], batch_size=64, progress=False, amp=amp, channels_last=True)
            fam = predict(t.model, sets["family"], batch_size=64, progress=False, amp=amp, channels_last=True)
            sec = time.perf_counter() - start
            fauc = evaluate_frames(fam, "family", pool_reals=True).loc["all", "auc"]
            rows.append((model, seed, "bf16" if amp else "fp32", binary_metrics(df.label, df.prob)["auc"], fauc,
                         (len(df) + len(fam)) / sec, df["logit"].to_numpy()))
            print(rows[-1][:6], flush=True)
for model in ("laanet", "mat"):
    for seed in (0, 1):
        a, b = [r for r in rows if r[0] == model and r[1] == seed]
        print(f"{model} seed {seed}: val AUC fp32 {a[3]:.4f} bf16 {b[3]:.4f} (diff {b[3]-a[3]:+.4f}); "
              f"families fp32 {a[4]:.4f} bf16 {b[4]:.4f} (diff {b[4]-a[4]:+.4f}); "
              f"max |logit diff| {np.abs(a[6]-b[6]).max():.3f}; images/s fp32 {a[5]:.0f} bf16 {b[5]:.0f}")
    s0 = [r for r in rows if r[0] == model and r[2] == "fp32"]
    print(f"{model}: seed spread of fp32 val AUC {abs(s0[0][3]-s0[1][3]):.4f}, families {abs(s0[0][4]-s0[1][4]):.4f}")
