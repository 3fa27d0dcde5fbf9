//! The source tree: Debian's `kubernetes` source package fetched through a
//! private apt configuration (the machine's /etc/apt and its package lists
//! stay untouched), unpacked with Debian's patches, and fixed so that it
//! builds and runs with Go 1.19.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::{build, CLIENT_PACKAGE, SOURCE_PACKAGE, SOURCE_VERSION};
use crate::cmd::{self, step};
use crate::setup;

/// What the build needs from Debian, with what proves each is present.
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("golang-1.19-go", build::GO),
    // reflect2 1.0.2: the tree vendors 1.0.1, which crashes under Go >= 1.18
    // (json-iterator's map encoding reads a changed runtime layout).
    ("golang-github-modern-go-reflect2-dev", REFLECT2_DEBIAN),
    // dpkg-source, to unpack the source package with its patches.
    ("dpkg-dev", "dpkg-source"),
];

const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2/reflect2.go";
const REFLECT2_VENDORED: &str = "vendor/github.com/modern-go/reflect2";

/// Bookworm and its security suite, where the source version lives.
const APT_SOURCES: &str = "\
deb http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
deb-src http://deb.debian.org/debian-security bookworm-security main
";

/// The import path the tree builds under in GOPATH mode, as its own
/// scripts (hack/lib/golang.sh) arrange.
const IMPORT_PATH: &str = "k8s.io/kubernetes";

/// The generated OpenAPI definitions the tarball lacks, and what selects
/// their input packages (Makefile.generated_files' KUBE target).
const OPENAPI_PACKAGE: &str = "pkg/generated/openapi";
const OPENAPI_TAG: &str = "+k8s:openapi-gen=";
const OPENAPI_EXCLUDED: &[&str] = &[
    "vendor/k8s.io/code-generator/",
    "vendor/k8s.io/sample-apiserver/",
];

/// Written once the tree is fetched and fixed.
const READY_STAMP: &str = ".weir-ready";

/// What this module does to the source, for the cache key.
pub(super) fn recipe() -> String {
    format!(
        "source {SOURCE_PACKAGE}={SOURCE_VERSION} with debian/patches; \
         {REFLECT2_VENDORED} from {}; {OPENAPI_PACKAGE} by the vendored openapi-gen \
         over dirs tagged {OPENAPI_TAG} minus {OPENAPI_EXCLUDED:?}",
        BUILD_PACKAGES[1].0
    )
}

/// Returns the tree's path under the GOPATH (`work/gopath/src/k8s.io/
/// kubernetes`), fetching and fixing it unless that was done before.
pub(super) fn prepare(work: &Path) -> Result<PathBuf> {
    setup::ensure_packages(BUILD_PACKAGES)?;
    let tree = work.join("src/tree");
    let in_gopath = gopath(work).join("src").join(IMPORT_PATH);
    if tree.join(READY_STAMP).is_file() && in_gopath.is_dir() {
        eprintln!("    source tree ready at {}", tree.display());
        return Ok(in_gopath);
    }
    fetch(work, &tree)?;
    replace_reflect2(&tree)?;
    if let Some(parent) = in_gopath.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(&in_gopath).is_ok() {
        fs::remove_file(&in_gopath)?;
    }
    symlink(&tree, &in_gopath)?;
    generate_openapi(work, &in_gopath)?;
    fs::write(tree.join(READY_STAMP), recipe())?;
    Ok(in_gopath)
}

pub(super) fn gopath(work: &Path) -> PathBuf {
    work.join("gopath")
}

/// `apt-get` with a configuration of its own under `work/apt`: its sources
/// list, package lists and archive cache; dpkg's status is only read.
fn apt(work: &Path) -> Result<Command> {
    let dir = work.join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let list = dir.join("sources.list");
    if fs::read_to_string(&list).ok().as_deref() != Some(APT_SOURCES) {
        fs::write(&list, APT_SOURCES)?;
    }
    let mut apt = Command::new("apt-get");
    for (option, value) in [
        ("Dir::Etc::SourceList", list.clone()),
        ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
    ] {
        apt.arg("-o").arg(format!("{option}={}", value.display()));
    }
    // The downloads land in root's directories, which apt's unprivileged
    // sandbox user cannot write; say so instead of a warning per download.
    apt.args(["-o", "APT::Sandbox::User=root"]);
    apt.env("DEBIAN_FRONTEND", "noninteractive");
    Ok(apt)
}

/// Downloads the source package and unpacks it (applying debian/patches)
/// into `tree`, replacing whatever was there.
fn fetch(work: &Path, tree: &Path) -> Result<()> {
    step(&format!(
        "fetching Debian source {SOURCE_PACKAGE} {SOURCE_VERSION}"
    ));
    let downloads = work.join("src");
    if downloads.exists() {
        fs::remove_dir_all(&downloads)?;
    }
    fs::create_dir_all(&downloads)?;
    cmd::run(apt(work)?.arg("update")).context("apt-get update (private lists) failed")?;
    cmd::run(
        apt(work)?
            .args(["source", "--download-only"])
            .arg(format!("{SOURCE_PACKAGE}={SOURCE_VERSION}"))
            .current_dir(&downloads),
    )
    .context("cannot download the kubernetes source package")?;
    let dsc = downloads.join(format!("{SOURCE_PACKAGE}_{SOURCE_VERSION}.dsc"));
    cmd::run(
        Command::new("dpkg-source")
            .args(["--no-check", "-x"])
            .arg(&dsc)
            .arg(tree),
    )
    .context("cannot unpack the kubernetes source package")
}

/// Replaces the vendored reflect2 1.0.1 with Debian's 1.0.2.
fn replace_reflect2(tree: &Path) -> Result<()> {
    step("fix: vendored reflect2 1.0.1 -> Debian's 1.0.2 (1.0.1 crashes under Go >= 1.18)");
    let vendored = tree.join(REFLECT2_VENDORED);
    let debian = Path::new(REFLECT2_DEBIAN)
        .parent()
        .ok_or_else(|| anyhow!("{REFLECT2_DEBIAN} has no directory"))?;
    fs::remove_dir_all(&vendored)
        .with_context(|| format!("the tree has no {}", vendored.display()))?;
    fs::create_dir_all(&vendored)?;
    for entry in fs::read_dir(debian)? {
        let entry = entry?;
        let name = entry.file_name();
        // Only the package's sources: a go.mod in vendor/ means nothing in
        // GOPATH mode, and tests are not built.
        let keep = name
            .to_str()
            .is_some_and(|n| (n.ends_with(".go") || n.ends_with(".s")) && !n.ends_with("_test.go"));
        if keep && entry.file_type()?.is_file() {
            fs::copy(entry.path(), vendored.join(&name))?;
        }
    }
    Ok(())
}

/// Generates `pkg/generated/openapi/zz_generated.openapi.go` with the
/// vendored openapi-gen, over the packages the tree's own Makefile selects,
/// and checks its API-rule report against the tree's known violations.
fn generate_openapi(work: &Path, in_gopath: &Path) -> Result<()> {
    step("fix: generating pkg/generated/openapi (missing from the tarball)");
    let tools = work.join("tools");
    let openapi_gen = tools.join("openapi-gen");
    cmd::run(
        build::go(work, in_gopath)
            .args(["build", "-trimpath", "-o"])
            .arg(&openapi_gen)
            .arg("./vendor/k8s.io/kube-openapi/cmd/openapi-gen"),
    )?;
    let dirs = openapi_dirs(in_gopath)?;
    eprintln!("    {} packages tagged {OPENAPI_TAG}", dirs.len());
    let inputs: Vec<String> = dirs.iter().map(|d| format!("{IMPORT_PATH}/{d}")).collect();
    let report = tools.join("openapi-violations.report");
    let mut generate = Command::new(&openapi_gen);
    build::go_env(&mut generate, work, in_gopath);
    generate
        .arg("--logtostderr")
        .arg("-i")
        .arg(inputs.join(","))
        .arg("-p")
        .arg(format!("{IMPORT_PATH}/{OPENAPI_PACKAGE}"))
        .args(["-O", "zz_generated.openapi"])
        .args(["-h", "vendor/k8s.io/code-generator/hack/boilerplate.go.txt"])
        .arg("-r")
        .arg(&report)
        .arg("--output-base")
        .arg(gopath(work).join("src"));
    // Not cmd::run: the package list would fill a screen.
    eprintln!("    $ openapi-gen -i <those packages> -p {IMPORT_PATH}/{OPENAPI_PACKAGE} ...");
    let status = generate.stdout(std::io::stderr()).status()?;
    if !status.success() {
        bail!("openapi-gen failed ({status})");
    }
    let known = in_gopath.join("api/api-rules/violation_exceptions.list");
    let sorted = |path: &Path| -> Result<Vec<String>> {
        let mut lines: Vec<String> = fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        Ok(lines)
    };
    if sorted(&report)? != sorted(&known)? {
        bail!(
            "openapi-gen's API-rule report {} differs from the tree's {}",
            report.display(),
            known.display()
        );
    }
    Ok(())
}

/// The directories (as vendor/... for staging) whose Go files carry an
/// openapi-gen tag, as Makefile.generated_files computes KUBE_OPENAPI_DIRS:
/// Go files outside ./vendor, ./_* and ./.*, with a `// +k8s:` comment tag
/// in column 0 and the openapi-gen tag, minus two staging repositories.
fn openapi_dirs(root: &Path) -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let mut tagged = false;
        for entry in fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let pruned = rel.as_os_str().is_empty()
                    && (name == "vendor" || name.starts_with('_') || name.starts_with('.'));
                if !pruned {
                    pending.push(rel.join(&*name));
                }
            } else if !tagged && kind.is_file() && name.ends_with(".go") {
                tagged = has_openapi_tag(&entry.path())?;
            }
        }
        if tagged {
            let dir = rel.to_string_lossy().into_owned();
            let dir = match dir.strip_prefix("staging/src/") {
                Some(staged) => format!("vendor/{staged}"),
                None => dir,
            };
            if !OPENAPI_EXCLUDED.iter().any(|x| dir.starts_with(x)) {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn has_openapi_tag(file: &Path) -> Result<bool> {
    let lines: Vec<String> = BufReader::new(fs::File::open(file)?)
        .lines()
        .collect::<Result<_, _>>()?;
    Ok(tagged_for_openapi(lines.iter().map(String::as_str)))
}

/// A file counts when it has a `// +k8s:` tag in column 0 (the Makefile's
/// `grep '^// *+k8s:'`) and mentions the openapi-gen tag anywhere.
fn tagged_for_openapi<'a>(lines: impl Iterator<Item = &'a str>) -> bool {
    let (mut comment_tag, mut openapi) = (false, false);
    for line in lines {
        comment_tag |= line
            .strip_prefix("//")
            .is_some_and(|rest| rest.trim_start_matches(' ').starts_with("+k8s:"));
        openapi |= line.contains(OPENAPI_TAG);
        if comment_tag && openapi {
            return true;
        }
    }
    false
}

/// Generates `test/e2e/generated/bindata.go` (the suite's manifests and
/// fixtures, missing from the tarball: `go test -c ./test/e2e` fails with
/// `undefined: Asset` without it) with the vendored go-bindata, over the
/// directories and with the flags of hack/generate-bindata.sh.
pub(super) fn generate_bindata(work: &Path, in_gopath: &Path) -> Result<()> {
    step("fix: generating test/e2e/generated/bindata.go (missing from the tarball)");
    let go_bindata = work.join("tools/go-bindata");
    cmd::run(
        build::go(work, in_gopath)
            .args(["build", "-trimpath", "-o"])
            .arg(&go_bindata)
            .arg("./vendor/github.com/go-bindata/go-bindata/go-bindata"),
    )?;
    let mut generate = Command::new(&go_bindata);
    build::go_env(&mut generate, work, in_gopath);
    cmd::run(generate.args([
        "-nometadata",
        "-o",
        "test/e2e/generated/bindata.go",
        "-pkg",
        "generated",
        "-ignore",
        ".jpg",
        "-ignore",
        ".png",
        "-ignore",
        ".md",
        "-ignore",
        "BUILD(\\.bazel)?",
        "test/conformance/testdata/...",
        "test/e2e/testing-manifests/...",
        "test/e2e_node/testing-manifests/...",
        "test/images/...",
        "test/fixtures/...",
    ]))
}

/// Unpacks kubectl from Debian's `kubernetes-client` package of the same
/// version into `bin`. Not installed with dpkg: machines often carry
/// another package's /usr/bin/kubectl (e.g. Google Cloud SDK's), and the
/// lab wants this version (1.20, matching the server) whatever is there.
pub(super) fn unpack_kubectl(work: &Path, bin: &Path) -> Result<()> {
    step(&format!(
        "kubectl from Debian's {CLIENT_PACKAGE} {SOURCE_VERSION}"
    ));
    let dir = work.join("client");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let download = || {
        cmd::run(
            apt(work)?
                .arg("download")
                .arg(format!("{CLIENT_PACKAGE}={SOURCE_VERSION}"))
                .current_dir(&dir),
        )
    };
    if download().is_err() {
        cmd::run(apt(work)?.arg("update"))?;
        download().context("cannot download kubernetes-client")?;
    }
    let deb = fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dir.display()))?;
    let root = dir.join("root");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::copy(root.join("usr/bin/kubectl"), bin.join("kubectl"))
        .context("kubernetes-client has no usr/bin/kubectl")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tagged_for_openapi;

    #[test]
    fn a_file_is_tagged_as_the_makefile_greps_it() {
        let tagged = |text: &str| tagged_for_openapi(text.lines());
        assert!(tagged("// +k8s:openapi-gen=true\npackage v1"));
        assert!(tagged(
            "//+k8s:deepcopy-gen=package\n// +k8s:openapi-gen=true"
        ));
        // A tag mentioned only inside an indented comment does not count...
        assert!(!tagged("package v1\n  // +k8s:openapi-gen=true"));
        // ...nor does another generator's tag alone.
        assert!(!tagged("// +k8s:deepcopy-gen=package\npackage v1"));
        assert!(!tagged("package v1"));
    }
}
