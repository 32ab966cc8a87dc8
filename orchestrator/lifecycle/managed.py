"""`orch launch --managed` (issue 24): the job runs as an Auto Scaling group of one, and AWS, not this laptop,
replaces its instance after a spot reclaim or a failure.

    spec and orch's package -> s3://CKPT/orch-jobs/JOB/    (job/spec_file.py, lifecycle/orch_package.py)
    launch template + group of one -> cloud/groups.py     (user data: infra/bootstrap.sh with ORCH_SPEC_URI)
    each instance it starts: bootstrap.sh installs orch from the package (its hash is in the user data) and
    runs lifecycle/self_start.py: data, image, the newest checkpoint in CKPT, then the trainer.

The laptop starts nothing on the instance: the first one sets itself up exactly as a replacement does.
A job that ends on purpose (finished, a cap, autostop) sets its group to 0 instances first (the
watcher, infra/bootstrap.sh), so it is not replaced; `orch teardown` deletes the group, its template,
and the spec and package kept for it (never the checkpoints).
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import time
from dataclasses import replace

from orchestrator import state
from orchestrator.cloud import aws, groups, iam, instances, job_specs, network
from orchestrator.config import ConfigError
from orchestrator.errors import FlowError
from orchestrator.files import locked
from orchestrator.job import spec_file
from orchestrator.job.restore import bucket_uri
from orchestrator.lifecycle import orch_package
from orchestrator.lifecycle.keys import ensure_key
from orchestrator.lifecycle.plan import preflight
from orchestrator.lifecycle.progress import Say, phase
from orchestrator.lifecycle.resume import launch_record
from orchestrator.lifecycle.userdata import render_user_data
from orchestrator.paths import job_lock_path, key_path
from orchestrator.records import ImageRegistry, Instance, LaunchConfig, LaunchPlan, Restore

def launch_managed(cfg: LaunchConfig, p: LaunchPlan, registry: ImageRegistry | None, say: Say) -> Instance:
    """The job's group (made once) and its current instance once running; the instance starts the job itself."""
    s = cfg.settings
    with locked(job_lock_path(cfg.job), waiting=lambda: say(f"  waiting: another orch launch or teardown of "
                                                              f"{cfg.job} is running on this machine")):
        with phase("look for the job's Auto Scaling group (tag orch:job)", say):
            group = groups.find_group(p.region, cfg.job)
            loose = [i for i in instances.find_instances(p.region, cfg.job) if aws.TAG_MANAGED not in i.tags]
            if loose:
                raise FlowError(f"Job {cfg.job} runs on {loose[0].instance_id}, launched without --managed. Nothing "
                                f"was created. `orch teardown {cfg.job}` first, or choose another --name.")
            say(f"  {group.name}: {group.desired} instance(s) wanted, {len(group.instances)} up" if group else "  none")
        if group is None:
            _create(cfg, p, registry, say)
        elif group.desired == 0:
            raise FlowError(f"Job {cfg.job}'s group was set to 0 instances: the job ended on purpose (it finished, "
                            f"or reached its cap or autostop). Weights: `orch fetch-weights {cfg.job}`. To run it "
                            f"again: `orch teardown {cfg.job}`, then the same launch with --managed --resume.")
    instance = _wait_for_instance(cfg, p, say)
    say(f"  AWS keeps one instance of {cfg.job} running ({', '.join(cfg.managed)}, "
        f"{'spot' if p.spot else 'on-demand'}): a reclaimed or failed one is replaced, and the new one resumes from "
        f"{s.checkpoint_bucket} with no orch running here. It starts the job itself: `orch logs {cfg.job} --follow`.")
    return instance


STOPS_ITS_GROUP = "autoscaling:SetDesiredCapacity"


def check_role_stops_its_group(region: str, profile: str, say: Say) -> None:
    """A job that ends on purpose sets its group to 0 with the instance's role. A role without that (orch init's from
    before --managed) would leave AWS replacing the finished job again and again: refused when orch's own policy on
    the role says so, a warning when the role's policies are not orch's to read."""
    try:
        roles = iam.instance_profile_roles(region, profile) or []
        policies = {role: iam.role_policy(region, role) for role in roles}
    except Exception as e:
        if not aws.is_boto_error(e):
            raise
        policies = {}
    allowed = [role for role, policy in policies.items() if policy and _allows(policy, STOPS_ITS_GROUP)]
    if allowed:
        return
    if any(policies.values()):
        raise ConfigError(f"The role of instance profile {profile} may not {STOPS_ITS_GROUP}: a managed job that ends "
                          "would be replaced by AWS again and again. Run `orch init` again (it updates the role from "
                          "infra/instance-role-policy.json). Nothing was created.")
    say(f"  warning: could not read what the role of {profile} may do. It must allow {STOPS_ITS_GROUP} on group "
        "orch-JOB (infra/instance-role-policy.json), or a job that ends is replaced again and again")


def _allows(policy: dict, action: str) -> bool:
    statements = policy.get("Statement", [])
    for st in statements if isinstance(statements, list) else [statements]:
        actions = st.get("Action", [])
        if st.get("Effect") == "Allow" and any(fnmatch.fnmatch(action.lower(), str(a).lower())
                                               for a in (actions if isinstance(actions, list) else [actions])):
            return True
    return False


def _create(cfg: LaunchConfig, p: LaunchPlan, registry: ImageRegistry | None, say: Say) -> None:
    s = cfg.settings
    check_role_stops_its_group(p.region, s.iam_instance_profile, say)
    checkpoints = bucket_uri(s.checkpoint_bucket, cfg.job, "last.pt")
    if not cfg.resume and job_specs.exists(p.region, checkpoints):
        raise ConfigError(f"{checkpoints} is there: an earlier job {cfg.job} left checkpoints, and this one would "
                          "continue from them. Add --resume to do that, or choose another --name. Nothing was created.")
    spec = replace(cfg.job_spec, remote_root=s.remote_root, registry=registry, restore=Restore(bucket=s.checkpoint_bucket))
    uri = spec_file.spec_uri(s.checkpoint_bucket, cfg.job)
    body = spec_file.dumps(spec, p.region)  # what a bucket must not hold is refused before anything is made
    spec_file.from_json(json.loads(body), uri)  # and what every instance would refuse, here rather than on each
    package = orch_package.build()
    # The user data pins both hashes: each instance runs this spec and this orch, whatever the bucket holds later.
    p = replace(p, user_data=render_user_data(cfg.job, s, p.price_per_hour, orch_package.boot_values(
        cfg.job, s.checkpoint_bucket, package, int(time.time()), hashlib.sha256(body).hexdigest())))
    if (s.max_dollars is not None) and p.price_per_hour is None:
        say(f"  warning: no price known for one of {', '.join(cfg.managed)}; --max-dollars can't be enforced, use "
            "--max-hours")
    with phase("pre-flight (quota)", say):
        say("  " + preflight(p).summary)
    state.update(cfg.job, target="aws", region=p.region, instance_type=p.instance_type, spot=p.spot,
                 ssh_user=s.ssh_user, ssh_proxy_command=s.ssh_proxy_command, status="launching",
                 launch=launch_record(cfg))
    with phase("key pair and security group", say):
        key = ensure_key(p.region, cfg.job, in_use=False)
        group_id = network.ensure_security_group(p.region, cfg.job, p.ssh_cidr, p.vpc_id)
        state.update(cfg.job, key_name=key.name, key_path=str(key_path(cfg.job)), security_group_id=group_id)
    folder = uri.rsplit("/", 1)[0]
    state.update(cfg.job, spec_folder=folder)  # for teardown, should the group be gone
    with phase(f"the job's spec and orch ({len(package.data) / 1e6:.1f} MB) to {folder}/", say):
        job_specs.put(p.region, folder + "/" + package.name, package.data)
        job_specs.put(p.region, uri, body)  # after the package: an instance that reads the spec finds it
    with phase("launch template and Auto Scaling group of one", say):
        try:
            group = groups.ensure_group(p, group_id, cfg.managed, spec_folder=folder, poll_s=s.poll_interval_s)
        except BaseException:
            with contextlib.suppress(Exception):  # no group names them: teardown could not find them
                job_specs.delete_folder(p.region, folder)
            raise
        say(f"  {group.name} over {', '.join(cfg.managed)} in {', '.join(p.zones)}"
            + (", capacity rebalancing on" if p.spot else ""))


def _wait_for_instance(cfg: LaunchConfig, p: LaunchPlan, say: Say) -> Instance:
    """The group's instance once running (AWS may take a while to find spot capacity), recorded in the state file."""
    s = cfg.settings
    deadline = time.monotonic() + s.wait_timeout_s
    with phase("wait for the group's instance", say):
        while True:
            group = groups.find_group(p.region, cfg.job)
            up = [i for i in instances.find_instances(p.region, cfg.job)
                  if group is not None and i.instance_id in group.instances]
            running = [i for i in up if i.state == "running"]
            if running:
                instance = running[0]
                break
            if time.monotonic() > deadline:
                raise FlowError(f"No instance of {cfg.job}'s group is running after {s.wait_timeout_s:g}s "
                                f"({', '.join(i.instance_id + ' ' + i.state for i in up) or 'none started yet'}). "
                                f"AWS keeps trying ({', '.join(cfg.managed)}); `orch status {cfg.job}` shows it, "
                                f"`orch teardown {cfg.job}` stops it.")
            time.sleep(s.poll_interval_s)
        state.update(cfg.job, instance_id=instance.instance_id, status="running", public_ip=instance.public_ip,
                     private_ip=instance.private_ip)
        say(f"  {instance.instance_id} ({instance.instance_type}) in {instance.zone}"
            f"{' (spot)' if instance.spot else ''}: {instance.public_ip or instance.private_ip}")
    return instance
