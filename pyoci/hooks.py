"""Running lifecycle hooks: state JSON on stdin, args, env, timeout."""
import _signal
import os

from pyoci import jsontext, log
from pyoci.errors import ConfigError, HookError, errno_text


def run(hooks, state, phase, cwd=None, env=None):
    """Run HOOKS in order, in CWD (default: ours); the first failure raises
    HookError. A hook without env of its own gets ENV (default: ours), as
    runc gives startContainer hooks the container process's env."""
    for index, hook in enumerate(hooks):
        run_one(hook, index, state, phase, cwd, env)


def run_all_warning(hooks, state, phase, cwd=None):
    """Run every hook; a failure is only a warning (poststop)."""
    for index, hook in enumerate(hooks):
        try:
            run_one(hook, index, state, phase, cwd)
        except HookError as exc:
            log.warning(str(exc))


# The config's name of each phase, by spec.Hooks' attribute.
PHASES = {"prestart": "prestart", "create_runtime": "createRuntime",
          "create_container": "createContainer", "start_container": "startContainer",
          "poststart": "poststart", "poststop": "poststop"}


def missing_programs(hooks, rootfs):
    """A refusal for each hook whose path is not an executable file: on the
    host, but for startContainer's, which are in the root filesystem."""
    from pyoci.linux.inroot import secure_join
    found = []
    for attribute, phase in PHASES.items():
        for index, hook in enumerate(getattr(hooks, attribute)):
            path = secure_join(rootfs, hook.path) if phase == "startContainer" else hook.path
            if os.path.isfile(path) and os.access(path, os.X_OK):
                continue
            why = "no such file or directory" if not os.path.exists(path) else "permission denied"
            found.append(ConfigError(f"config.json: hooks.{phase}[{index}].path: "
                                     f"exec {hook.path}: {why}"))
    return found


def run_one(hook, index, state, phase, cwd=None, env=None):
    """Run one hook with the state on stdin, in a session of its own so that a
    timeout kills everything it started (which may hold its output pipes).
    Its argv is its args exactly, args[0] included; its errors read as
    runc's: "error running prestart hook #0: exit status 3, stdout: …"."""
    import subprocess
    log.debug(f"running {phase} hook #{index}: {hook.path} {hook.args}")
    what = f"error running {phase} hook #{index}"
    if hook.env is not None:
        env = dict(item.split("=", 1) for item in hook.env if "=" in item)
    try:
        child = subprocess.Popen(
            hook.args, executable=hook.path, env=env, cwd=cwd, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        # The child's chdir fails as its exec would: Popen names the directory.
        failed = f"chdir {cwd}" if cwd is not None and exc.filename == cwd else f"exec {hook.path}"
        raise HookError(f"{what}: {failed}: {errno_text(exc.errno)}") from None
    try:
        stdout, stderr = child.communicate(jsontext.dumps(state).encode(), timeout=hook.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, _signal.SIGKILL)
        child.communicate()
        raise HookError(f"{what}: hook ran past specified timeout of {hook.timeout:.1f}s") from None
    if child.returncode != 0:
        raise HookError(f"{what}: {_exit_text(child.returncode)}, "
                        f"stdout: {_text(stdout)}, stderr: {_text(stderr)}")


def _exit_text(returncode):
    if returncode < 0:
        import signal  # its names, for a hook that failed
        return f"signal: {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _text(output):
    return output.decode(errors="replace").strip().replace("\n", " ")

