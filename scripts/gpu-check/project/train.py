"""A small PyTorch training run on the GPU the worker pool hands out; metrics go to the
tracking server over MLflow's REST API (the device machine has no mlflow package)."""
import argparse
import json
import os
import time
import urllib.request

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=float, default=300)
steps = int(parser.parse_args().steps)
uri, run_id = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"]


def post(path, body):
    req = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


assert torch.cuda.is_available(), "no GPU visible"
device = torch.device("cuda")
post("runs/log-parameter", {"run_id": run_id, "key": "cuda_visible_devices", "value": os.environ.get("CUDA_VISIBLE_DEVICES", "")})
post("runs/log-parameter", {"run_id": run_id, "key": "device_name", "value": torch.cuda.get_device_name(0)})
post("runs/log-parameter", {"run_id": run_id, "key": "device_count", "value": str(torch.cuda.device_count())})
torch.manual_seed(0)
x = torch.randn(4096, 64, device=device)
w_true = torch.randn(64, 1, device=device)
y = x @ w_true + 0.01 * torch.randn(4096, 1, device=device)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1)).to(device)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(steps):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    if step % 50 == 0 or step == steps - 1:
        post("runs/log-metric", {"run_id": run_id, "key": "loss", "value": float(loss), "step": step,
                                 "timestamp": int(time.time() * 1000)})
post("runs/log-metric", {"run_id": run_id, "key": "final_loss", "value": float(loss), "step": steps,
                         "timestamp": int(time.time() * 1000)})
post("runs/log-parameter", {"run_id": run_id, "key": "param_device", "value": str(next(model.parameters()).device)})
