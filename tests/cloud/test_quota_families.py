"""Which vCPU quota a launch is checked against: AWS's own families, the longest prefix first."""
from __future__ import annotations

import pytest

from orchestrator.cloud.quota import quota_for


@pytest.mark.parametrize("instance_type, spot, code, name", [
    ("g4dn.2xlarge", False, "L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("g4dn.2xlarge", True, "L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("gr6.4xlarge", False, "L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("p4d.24xlarge", True, "L-7212CCBC", "All P Spot Instance Requests"),
    ("c5.xlarge", False, "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    ("d3.xlarge", False, "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    ("dl1.24xlarge", False, "L-6E869C2A", "Running On-Demand DL instances"),  # not Standard's "d"
    ("inf2.xlarge", False, "L-1945791B", "Running On-Demand Inf instances"),  # not Standard's "i"
    ("trn1.2xlarge", True, "L-6B0D517C", "All Trn Spot Instance Requests"),  # not Standard's "t"
    ("hpc7g.16xlarge", False, "L-F7808C92", "Running On-Demand HPC instances"),  # not Standard's "h"
    ("x2idn.16xlarge", False, "L-7295265B", "Running On-Demand X instances"),
    ("f1.2xlarge", True, "L-88CF9481", "All F Spot Instance Requests"),
    ("u-6tb1.56xlarge", False, "L-43DA4232", "Running On-Demand High Memory instances"),
    ("u-6tb1.56xlarge", True, "", ""),  # no spot for High Memory: the check says unknown
])
def test_each_instance_type_is_checked_against_the_quota_aws_counts_it_in(instance_type, spot, code, name):
    assert quota_for(instance_type, spot) == (code, name)
