"""Where a job runs (base.py: the `Machine` and `Runner` interfaces) and one module per kind of machine.

    instance.py        an EC2 instance over SSH, Docker there (bootstrap.py: its first-boot set-up and hard cap)
    local_docker.py    this machine's Docker engine
    local_process.py   this machine, the trainer as a supervised process (process_runner.py, supervisor.py)
    docker_runner.py   the trainer container through the Docker SDK;   image.py  the trainer image
    local_jobs.py      this machine's jobs' files under $ORCH_HOME/jobs
"""
