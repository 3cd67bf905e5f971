"""The companion: lambdawrap's external extension process (export happens here, off the
caller's path). Run as `python -m lambdawrap.companion NAME` by layer/extensions/lambdawrap."""
