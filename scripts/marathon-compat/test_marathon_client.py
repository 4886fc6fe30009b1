"""Flotilla's Marathon REST API v2, driven by the real Marathon client from PyPI.

Every test talks to the server at MARATHON_URL (run.sh starts `flotilla dev` and sets it)
through `marathon.MarathonClient`, as a user's script would, and asserts on the objects the
client hands back: if the client cannot parse a reply, or maps a status to the wrong
exception, the test fails just as the user's script would.

Waits are bounded polls of a condition (MARATHON_COMPAT_TIMEOUT seconds, default 60, every
0.25 s); a wait that runs out fails with the last state it saw.

Environment:
  MARATHON_URL               the server, e.g. http://127.0.0.1:8080 (required)
  MARATHON_COMPAT_TIMEOUT    the bound of every wait, in seconds (default 60)
  MARATHON_COMPAT_CLIENT_LOG set: log every request and reply the client makes (to stderr)
  FLOTILLA_COMPAT_RUN        a token put in every app's env and labels (default: random),
                             so that run.sh can find this run's task processes afterwards

Run one class or test: python3 test_marathon_client.py AppLifecycleTest
"""

import collections
import collections.abc

# marathon 0.13.0 (the latest release) serializes nested objects through `collections.Iterable`,
# which Python 3.10 removed; every user of that release on a current Python needs this alias
# before the client can send an app with port definitions. The client's own repository fixed
# this after the release.
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

import datetime  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
import uuid  # noqa: E402

from marathon import MarathonClient  # noqa: E402
from marathon.exceptions import ConflictError, MarathonHttpError, NotFoundError  # noqa: E402
from marathon.models import MarathonApp, MarathonDeployment, MarathonInfo, MarathonTask  # noqa: E402
from marathon.models.app import PortDefinition  # noqa: E402
from marathon.models.deployment import MarathonDeploymentAction, MarathonDeploymentStep  # noqa: E402
from marathon.models.info import MarathonConfig, MarathonHttpConfig, MarathonZooKeeperConfig  # noqa: E402

MARATHON_URL = os.environ.get("MARATHON_URL", "")
TIMEOUT = float(os.environ.get("MARATHON_COMPAT_TIMEOUT", "60"))
POLL_INTERVAL = 0.25
RUN = os.environ.get("FLOTILLA_COMPAT_RUN") or uuid.uuid4().hex[:8]
RUN_LABEL = "compat-run"
RUN_ENV = "FLOTILLA_COMPAT_RUN"

# More than any agent of a dev node has: an app asking for it is accepted, but its deployment
# never finishes, which is how these tests hold a deployment in flight without racing it.
UNPLACEABLE_CPUS = 1000.0


def setUpModule():
    if not MARATHON_URL:
        raise RuntimeError("MARATHON_URL is not set (run.sh sets it to the dev node's API)")
    if os.environ.get("MARATHON_COMPAT_CLIENT_LOG"):
        # Every request and reply the client logs (status, body), and urllib3's request lines.
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    else:
        # The client logs each 4xx it raises as an error; the expected ones would drown the
        # report. A failed assertion shows the exception, with the status and message.
        logging.getLogger("marathon").addHandler(logging.NullHandler())
        logging.getLogger("marathon").propagate = False


def new_client():
    return MarathonClient(MARATHON_URL, timeout=10)


def app_id_for(name):
    """A fresh app id under /compat, unique to this run and call."""
    return f"/compat/{name}-{RUN}-{uuid.uuid4().hex[:6]}"


def tiny_app(**overrides):
    """The suite's app: a sleeping shell command with one host port."""
    fields = dict(
        cmd="sleep 3600",
        cpus=0.05,
        mem=16,
        instances=1,
        port_definitions=[PortDefinition(port=0, protocol="tcp")],
        env={RUN_ENV: RUN},
        labels={RUN_LABEL: RUN},
    )
    fields.update(overrides)
    return MarathonApp(**fields)


def wait_until(what, probe, timeout=None):
    """Polls `probe` (returning (done, observed)) until done or the bound; returns `observed`."""
    bound = TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + bound
    while True:
        done, observed = probe()
        if done:
            return observed
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {bound:g} s; last seen: {observed}")
        time.sleep(POLL_INTERVAL)


def describe_tasks(tasks):
    return [(t.id, t.state, t.version) for t in tasks]


class CompatTestCase(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.client = new_client()

    # Cleanup -------------------------------------------------------------------------------

    def remove_at_end(self, app_id):
        """Deletes the app (forced) when the test ends, whatever its outcome."""
        self.addCleanup(self._force_delete, app_id)

    def _force_delete(self, app_id):
        try:
            self.client.delete_app(app_id, force=True)
        except NotFoundError:
            pass

    # Observations ----------------------------------------------------------------------------

    def deployments_of(self, app_id):
        return [d for d in self.client.list_deployments() if app_id in (d.affected_apps or [])]

    def wait_steady(self, app_id, instances, what, also=None):
        """Waits until the app has `instances` running tasks and no deployment (in the app's
        `deployments` nor in /v2/deployments), and `also(app, tasks)` holds if given.
        Returns (app, tasks)."""

        def probe():
            app = self.client.get_app(app_id)
            tasks = self.client.list_tasks(app_id)
            deployments = self.deployments_of(app_id)
            running = [t for t in tasks if t.state == "TASK_RUNNING"]
            done = (
                app.instances == instances
                and app.tasks_running == instances
                and not app.deployments
                and not deployments
                and len(tasks) == instances
                and len(running) == instances
                and (also is None or also(app, tasks))
            )
            observed = {
                "instances": app.instances,
                "tasksRunning": app.tasks_running,
                "app.deployments": [d.id for d in app.deployments],
                "/v2/deployments": [d.id for d in deployments],
                "tasks": describe_tasks(tasks),
            }
            return done, ((app, tasks) if done else observed)

        return wait_until(f"{app_id}: {what}", probe)

    def wait_gone(self, app_id):
        def probe():
            try:
                app = self.client.get_app(app_id)
            except NotFoundError:
                listed = [a.id for a in self.client.list_apps() if a.id == app_id]
                tasks = [t.id for t in self.client.list_tasks() if t.app_id == app_id]
                return not listed and not tasks, {"listed": listed, "tasks in /v2/tasks": tasks}
            return False, {"instances": app.instances, "deployments": [d.id for d in app.deployments]}

        wait_until(f"{app_id} deleted (404, not listed, no tasks)", probe)

    # Shapes ----------------------------------------------------------------------------------

    def assert_deployment_result(self, result, what):
        """PUT/POST/DELETE replies that start a deployment: {"deploymentId": str, "version": str}."""
        self.assertIsInstance(result, dict, f"{what}: the client returns the reply's JSON object")
        self.assertIsInstance(result.get("deploymentId"), str, f"{what}: deploymentId in {result}")
        self.assertTrue(result["deploymentId"], f"{what}: empty deploymentId")
        self.assertIsInstance(result.get("version"), str, f"{what}: version in {result}")
        self.assertTrue(result["version"], f"{what}: empty version")

    def assert_task_shape(self, task, app_id, host_ports, service_ports=None):
        self.assertIsInstance(task, MarathonTask)
        self.assertIsInstance(task.id, str)
        self.assertTrue(task.id, "a task has an id")
        self.assertEqual(task.app_id, app_id, f"task {task.id}: appId")
        self.assertIsInstance(task.host, str, f"task {task.id}: host")
        self.assertTrue(task.host, f"task {task.id}: host is empty")
        self.assertIsInstance(task.slave_id, str, f"task {task.id}: slaveId")
        self.assertTrue(task.slave_id, f"task {task.id}: slaveId is empty")
        self.assertEqual(task.state, "TASK_RUNNING", f"task {task.id}: state")
        self.assertIsInstance(task.version, str, f"task {task.id}: version")
        self.assertIsInstance(task.staged_at, datetime.datetime, f"task {task.id}: stagedAt")
        self.assertIsInstance(task.started_at, datetime.datetime, f"task {task.id}: startedAt")
        self.assertGreaterEqual(task.started_at, task.staged_at, f"task {task.id}: started before staged")
        self.assertEqual(len(task.ports), host_ports, f"task {task.id}: one host port per port definition")
        for port in task.ports:
            self.assertIsInstance(port, int, f"task {task.id}: ports {task.ports}")
            self.assertTrue(0 < port < 65536, f"task {task.id}: port {port}")
        if service_ports is not None:
            self.assertEqual(task.service_ports, service_ports, f"task {task.id}: servicePorts")
        for address in task.ip_addresses:
            self.assertIsInstance(address.ip_address, str, f"task {task.id}: ipAddresses")

    def assert_deployment_shape(self, deployment):
        self.assertIsInstance(deployment, MarathonDeployment)
        self.assertIsInstance(deployment.id, str)
        self.assertTrue(deployment.id, "a deployment has an id")
        self.assertIsInstance(deployment.version, str, f"deployment {deployment.id}: version")
        self.assertIsInstance(deployment.affected_apps, list, f"deployment {deployment.id}: affectedApps")
        self.assertIsInstance(deployment.total_steps, int, f"deployment {deployment.id}: totalSteps")
        self.assertIsInstance(deployment.current_step, int, f"deployment {deployment.id}: currentStep")
        self.assertEqual(deployment.total_steps, len(deployment.steps), f"deployment {deployment.id}: totalSteps")
        # 1-based; 0 only while no step has started.
        self.assertTrue(
            0 <= deployment.current_step <= deployment.total_steps,
            f"deployment {deployment.id}: currentStep {deployment.current_step} of {deployment.total_steps}",
        )
        for step in deployment.steps:
            self.assertIsInstance(step, MarathonDeploymentStep, f"deployment {deployment.id}: steps are objects")
            for action in step.actions:
                self.assertIsInstance(action, MarathonDeploymentAction)
                self.assertIsInstance(action.action, str, f"deployment {deployment.id}: step action")
        for action in deployment.current_actions:
            self.assertIsInstance(action, MarathonDeploymentAction)
            self.assertIsInstance(action.action, str, f"deployment {deployment.id}: current action")


class ServerTest(CompatTestCase):
    """/ping, /v2/info, /v2/leader, /v2/deployments."""

    def test_ping_answers_pong(self):
        self.assertEqual(self.client.ping().strip(), b"pong")

    def test_info_describes_an_elected_leader(self):
        info = self.client.get_info()
        self.assertIsInstance(info, MarathonInfo)
        self.assertIsInstance(info.name, str)
        self.assertTrue(info.name, "info.name is empty")
        self.assertIsInstance(info.version, str)
        self.assertTrue(info.version, "info.version is empty")
        self.assertIs(info.elected, True, "the only master of a dev node is elected")
        self.assertIsInstance(info.leader, str)
        self.assertTrue(info.leader, "info.leader is empty")
        self.assertIsInstance(info.framework_id, str, "info.frameworkId")
        self.assertIsInstance(info.marathon_config, MarathonConfig)
        self.assertIsInstance(info.http_config, MarathonHttpConfig)
        self.assertIsInstance(info.zookeeper_config, MarathonZooKeeperConfig)

    def test_leader_is_the_one_info_names(self):
        leader = self.client.get_leader()
        self.assertIsInstance(leader, dict)
        self.assertIsInstance(leader.get("leader"), str, f"/v2/leader: {leader}")
        self.assertTrue(leader["leader"], "/v2/leader: empty leader")
        self.assertEqual(leader["leader"], self.client.get_info().leader)

    def test_deployments_list_parses(self):
        deployments = self.client.list_deployments()
        self.assertIsInstance(deployments, list)
        for deployment in deployments:
            self.assert_deployment_shape(deployment)


class AppLifecycleTest(CompatTestCase):
    """One app through everything a user does to it, each step waiting for the last."""

    def test_app_lifecycle(self):
        app_id = app_id_for("lifecycle")
        self.remove_at_end(app_id)

        # Create: 201 and the app as stored, with its version and an assigned service port.
        created = self.client.create_app(app_id, tiny_app())
        self.assertIsInstance(created, MarathonApp, "create_app returns False unless the reply is 201")
        self.assertEqual(created.id, app_id)
        self.assertEqual(created.cmd, "sleep 3600")
        self.assertEqual(created.cpus, 0.05)
        self.assertEqual(created.mem, 16)
        self.assertEqual(created.instances, 1)
        self.assertEqual(created.env.get(RUN_ENV), RUN)
        self.assertEqual(created.labels.get(RUN_LABEL), RUN)
        self.assertIsInstance(created.version, str)
        self.assertTrue(created.version, "a created app has a version")
        self.assertEqual(len(created.port_definitions), 1)
        self.assertEqual(created.port_definitions[0].protocol, "tcp")

        # Listed, with and without filters and embedded tasks.
        self.assertIn(app_id, [a.id for a in self.client.list_apps()])
        self.assertIn(app_id, [a.id for a in self.client.list_apps(app_id=f"-{RUN}-")])
        labelled = self.client.list_apps(label=f"{RUN_LABEL}=={RUN}")
        self.assertIn(app_id, [a.id for a in labelled])
        for app in labelled:
            self.assertEqual(app.labels.get(RUN_LABEL), RUN, f"{app.id} listed by a label it lacks")
        self.assertIn(app_id, [a.id for a in self.client.list_apps(cmd="sleep 3600")])
        self.assertNotIn(app_id, [a.id for a in self.client.list_apps(cmd=f"no-such-command-{RUN}")])
        embedded = [a for a in self.client.list_apps(embed_tasks=True) if a.id == app_id]
        self.assertEqual(len(embedded), 1)
        self.assertIsInstance(embedded[0].tasks, list)

        # Running: one task, no deployment left.
        app, tasks = self.wait_steady(app_id, 1, "1 instance running")
        self.assertEqual(app.cmd, "sleep 3600")
        self.assertEqual(app.version, created.version, "nothing changed the app since its creation")
        self.assertEqual(len(app.port_definitions), 1)
        service_port = app.port_definitions[0].port
        self.assertIsInstance(service_port, int)
        self.assertTrue(0 < service_port < 65536, f"port 0 is replaced by an assigned service port: {service_port}")
        self.assertEqual(len(tasks), 1)
        self.assert_task_shape(tasks[0], app_id, host_ports=1, service_ports=[service_port])

        # A single app's GET embeds its tasks by default; every embed the client knows parses.
        self.assertEqual([t.id for t in self.client.get_app(app_id).tasks], [tasks[0].id])
        full = self.client.get_app(
            app_id,
            embed_tasks=True,
            embed_counts=True,
            embed_deployments=True,
            embed_readiness=True,
            embed_last_task_failure=True,
            embed_failures=True,
            embed_task_stats=True,
        )
        self.assertEqual([t.id for t in full.tasks], [tasks[0].id])
        self.assertEqual(full.tasks_running, 1)

        # Scale to 3.
        scaled = self.client.scale_app(app_id, instances=3)
        self.assert_deployment_result(scaled, "scale_app")
        for deployment in self.client.list_deployments():
            self.assert_deployment_shape(deployment)
            if deployment.id == scaled["deploymentId"]:
                self.assertIn(app_id, deployment.affected_apps)
        app, tasks = self.wait_steady(app_id, 3, "scaled to 3")
        self.assertEqual(len({t.id for t in tasks}), 3, "three distinct tasks")
        for task in tasks:
            self.assert_task_shape(task, app_id, host_ports=1, service_ports=[service_port])
        with_tasks = [a for a in self.client.list_apps(embed_tasks=True) if a.id == app_id]
        self.assertEqual(sorted(t.id for t in with_tasks[0].tasks), sorted(t.id for t in tasks))
        everywhere = {t.id for t in self.client.list_tasks() if t.app_id == app_id}
        self.assertEqual(everywhere, {t.id for t in tasks}, "/v2/tasks lists the app's tasks")

        # Kill one task and scale down with it: 2 instances, the killed task gone.
        victim = tasks[0].id
        killed = self.client.kill_task(app_id, victim, scale=True)
        self.assert_deployment_result(killed, "kill_task(scale=True)")
        app, tasks = self.wait_steady(
            app_id, 2, "scaled down to 2 by a kill", also=lambda app, tasks: victim not in {t.id for t in tasks}
        )

        # Kill one task without scaling: it comes back as a new task.
        victim = tasks[0].id
        survivor = tasks[1].id
        killed = self.client.kill_task(app_id, victim)
        self.assertIsInstance(killed, MarathonTask, "kill_task without scale returns {'task': ...}")
        self.assertEqual(killed.id, victim)
        app, tasks = self.wait_steady(
            app_id,
            2,
            "the killed task replaced",
            also=lambda app, tasks: victim not in {t.id for t in tasks} and survivor in {t.id for t in tasks},
        )

        # Update the command and env: every task replaced by one of the new version.
        before = {t.id for t in tasks}
        updated = self.client.update_app(app_id, MarathonApp(cmd="sleep 3601", env={RUN_ENV: RUN, "STEP": "update"}))
        self.assert_deployment_result(updated, "update_app")
        app, tasks = self.wait_steady(
            app_id,
            2,
            "updated (all tasks of the new version)",
            also=lambda app, tasks: all(t.version == updated["version"] and t.id not in before for t in tasks),
        )
        self.assertEqual(app.cmd, "sleep 3601")
        self.assertEqual(app.env, {RUN_ENV: RUN, "STEP": "update"})
        self.assertEqual(app.version, updated["version"])
        self.assertEqual((app.cpus, app.mem), (0.05, 16), "a partial update keeps what it does not name")

        # Restart: every task replaced again.
        before = {t.id for t in tasks}
        restarted = self.client.restart_app(app_id)
        self.assert_deployment_result(restarted, "restart_app")
        app, tasks = self.wait_steady(
            app_id, 2, "restarted (every task replaced)", also=lambda app, tasks: not before & {t.id for t in tasks}
        )
        self.assertEqual(app.cmd, "sleep 3601")

        # Versions: the creation and the update are both kept, each with its own definition.
        versions = self.client.list_versions(app_id)
        self.assertIsInstance(versions, list)
        for version in versions:
            self.assertIsInstance(version, str)
        self.assertIn(created.version, versions)
        self.assertIn(updated["version"], versions)
        first = self.client.get_version(app_id, created.version)
        self.assertIsInstance(first, MarathonApp)
        self.assertEqual((first.id, first.cmd, first.instances), (app_id, "sleep 3600", 1))
        second = self.client.get_version(app_id, updated["version"])
        self.assertEqual((second.id, second.cmd), (app_id, "sleep 3601"))

        # Delete: a deployment, then 404 and no tasks.
        deleted = self.client.delete_app(app_id)
        self.assert_deployment_result(deleted, "delete_app")
        self.wait_gone(app_id)


class ErrorTest(CompatTestCase):
    """What the client raises for 404, 422 and 409."""

    def test_unknown_app_is_not_found(self):
        missing = app_id_for("does-not-exist")
        calls = {
            "get_app": lambda: self.client.get_app(missing),
            "list_tasks": lambda: self.client.list_tasks(missing),
            "list_versions": lambda: self.client.list_versions(missing),
            "restart_app": lambda: self.client.restart_app(missing),
            "delete_app": lambda: self.client.delete_app(missing),
            "kill_task": lambda: self.client.kill_task(missing, "no-such-task"),
        }
        for name, call in calls.items():
            with self.subTest(call=name):
                with self.assertRaises(NotFoundError) as raised:
                    call()
                self.assertEqual(raised.exception.status_code, 404)
                self.assertTrue(raised.exception.error_message, "a 404 carries a message")
        self.assertIsNone(self.client.scale_app(missing, instances=2), "scale_app swallows the 404 of its GET")

    def test_invalid_app_is_refused_with_422(self):
        for name, fields in {"cpus": {"cpus": -1}, "instances": {"instances": -1}}.items():
            with self.subTest(negative=name):
                app_id = app_id_for(f"invalid-{name}")
                self.remove_at_end(app_id)
                with self.assertRaises(MarathonHttpError) as raised:
                    self.client.create_app(app_id, tiny_app(**fields))
                error = raised.exception
                self.assertNotIsInstance(error, (NotFoundError, ConflictError))
                self.assertEqual(error.status_code, 422)
                self.assertTrue(error.error_message, "a 422 carries a message")
                details = getattr(error, "error_details", None)
                self.assertIsInstance(details, list, "a JSON 422 body has details (Content-Type application/json)")
                self.assertTrue(details, "the details name what is wrong")
                with self.assertRaises(NotFoundError):
                    self.client.get_app(app_id)

    def test_creating_an_existing_app_conflicts(self):
        app_id = app_id_for("duplicate")
        self.remove_at_end(app_id)
        first = self.client.create_app(app_id, tiny_app(instances=0))
        self.assertIsInstance(first, MarathonApp)
        with self.assertRaises(ConflictError) as raised:
            self.client.create_app(app_id, tiny_app(instances=0, cmd="sleep 3602"))
        self.assertEqual(raised.exception.status_code, 409)
        self.assertTrue(raised.exception.error_message, "a 409 carries a message")
        app = self.client.get_app(app_id)
        self.assertEqual((app.cmd, app.version), ("sleep 3600", first.version), "the first app is untouched")
        self.wait_steady(app_id, 0, "0 instances, deployment done")
        self.client.delete_app(app_id)
        self.wait_gone(app_id)


class StuckDeploymentTest(CompatTestCase):
    """A deployment that cannot finish: how it shows, locks its app, and is overridden."""

    def create_stuck_app(self, name):
        app_id = app_id_for(name)
        self.remove_at_end(app_id)
        created = self.client.create_app(app_id, tiny_app(cpus=UNPLACEABLE_CPUS))
        self.assertIsInstance(created, MarathonApp)

        def probe():
            deployments = self.deployments_of(app_id)
            return bool(deployments), deployments

        deployments = wait_until(f"{app_id}: its deployment listed in /v2/deployments", probe)
        self.assertEqual(len(deployments), 1, "one deployment per app at a time")
        return app_id, deployments[0]

    def test_deployment_in_flight_is_listed_and_locks_the_app(self):
        app_id, deployment = self.create_stuck_app("stuck")
        self.assert_deployment_shape(deployment)
        self.assertIn(app_id, deployment.affected_apps)
        named = [a.app for step in deployment.steps for a in step.actions]
        self.assertIn(app_id, named, "a step acts on the app")
        for action in deployment.current_actions:
            self.assertEqual(action.app, app_id)

        app = self.client.get_app(app_id)
        self.assertEqual([d.id for d in app.deployments], [deployment.id], "the app names its deployment")
        self.assertEqual(app.tasks_running, 0)
        listed = [a for a in self.client.list_apps() if a.id == app_id]
        self.assertEqual([d.id for d in listed[0].deployments], [deployment.id], "/v2/apps embeds deployments")

        with self.assertRaises(ConflictError, msg="update_app of a locked app"):
            self.client.update_app(app_id, MarathonApp(instances=2))
        with self.assertRaises(ConflictError, msg="delete_app of a locked app"):
            self.client.delete_app(app_id)
        with self.assertRaises(ConflictError, msg="restart_app of a locked app"):
            self.client.restart_app(app_id)

        deleted = self.client.delete_app(app_id, force=True)
        self.assert_deployment_result(deleted, "delete_app(force=True)")
        self.wait_gone(app_id)
        wait_until(
            f"{app_id}: the stuck deployment gone from /v2/deployments",
            lambda: (deployment.id not in [d.id for d in self.client.list_deployments()], deployment.id),
        )

    def test_forced_scale_replaces_a_stuck_deployment(self):
        app_id, deployment = self.create_stuck_app("unstuck")
        scaled = self.client.scale_app(app_id, instances=0, force=True)
        self.assert_deployment_result(scaled, "scale_app(force=True)")
        self.assertNotEqual(scaled["deploymentId"], deployment.id)
        self.wait_steady(app_id, 0, "scaled to 0 over the stuck deployment")
        self.assertNotIn(deployment.id, [d.id for d in self.client.list_deployments()])
        self.assert_deployment_result(self.client.delete_app(app_id), "delete_app")
        self.wait_gone(app_id)


def main(argv):
    loader = unittest.defaultTestLoader
    module = sys.modules[__name__]
    suite = loader.loadTestsFromNames(argv, module) if argv else loader.loadTestsFromModule(module)
    print(f"marathon-compat: {MARATHON_URL} (run {RUN}, waits up to {TIMEOUT:g} s)", flush=True)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    # A test whose subtests fail is counted once, as unittest's "Ran N tests" counts it.
    failed_tests = {getattr(test, "test_case", test).id() for test, _ in result.failures + result.errors}
    failed = len(failed_tests) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = max(result.testsRun - failed - skipped, 0)
    print(f"marathon-compat: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
