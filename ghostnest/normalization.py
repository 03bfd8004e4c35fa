"""Per-channel mean/std of the data sets the papers train on: the one definition that the data sets
(:mod:`ghostnest.data`) normalise with and the models' pretrained cfgs (timm's data config) declare.

A leaf module, so that the models can read it without importing the data pipeline.
"""
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # docs/reference.md (published notebook)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # CIFAR-100 train-set statistics
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
