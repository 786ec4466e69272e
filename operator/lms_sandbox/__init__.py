"""Test and sandbox harness for the LMS operator (not part of the operator itself).

`lms_sandbox.podrunner` plays kubelet for the project's pods on a kwok cluster.
"""
