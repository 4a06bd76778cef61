"""PyTorch/MONAI <-> Flax weight port for CT-FM's SegResNet (see mapping.py for the table).

python -m weights_port.convert --src model.safetensors --dst DIR
python -m weights_port.export --src DIR --dst model.safetensors
"""
