"""Transfer studies: strategies x training-set sizes x seeds on the user's own data (`hf-transfer compare`).

from hf_transfer.study import plan_study, run_study
study = plan_study("my_run.yaml", strategies="full,scratch", sizes="8,64", per_class=True, seeds="0,1,2")
report = run_study(study, jobs=2)       # study.csv, study.md, study.json, study.png
"""

from hf_transfer.study.compare import Study, plan_study, run_study

__all__ = ["Study", "plan_study", "run_study"]
