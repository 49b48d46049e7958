//! nginx (Debian's package, installed when missing and running as root)
//! started from a config shipped in `deploy/`, with only its addresses and
//! paths changed, for tests of the server behind it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::Reply;
use crate::shape_client::Endpoint;

/// nginx from a shipped config in `deploy/`, on a free port, in a scratch
/// prefix.
pub struct Nginx {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Endpoint for Nginx {
    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }
}

impl Nginx {
    /// Starts `deploy/<config>` with each `(shipped, ours)` text replaced
    /// (upstream addresses) besides its listen port and paths.
    pub fn start(config: &str, upstreams: &[(&str, String)]) -> Nginx {
        let binary = nginx_binary();
        let port = shapeshard::devpg::free_port().unwrap();
        let dir =
            std::env::temp_dir().join(format!("shapeshard-nginx-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy")
                .join(config),
        )
        .unwrap();
        let path = |p: &str| dir.join(p).display().to_string();
        let mut config = shipped
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace("/var/cache/nginx/shapeshard", &path("cache"))
            .replace("/run/shapeshard-nginx.pid", &path("nginx.pid"))
            .replace("/var/log/nginx/shapeshard-error.log", &path("error.log"))
            .replace("/var/log/nginx/shapeshard-access.log", &path("access.log"))
            .replace("worker_processes auto;", "worker_processes 1;\nuser root;");
        for (shipped, ours) in upstreams {
            assert!(config.contains(shipped), "{shipped} not in the config");
            config = config.replace(shipped, ours);
        }
        assert!(!config.contains("listen 8080;"), "listen not replaced");
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new(binary)
            .args([
                "-p",
                &path(""),
                "-c",
                &path("nginx.conf"),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen; its error log: {}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn get(&self, path_and_query: &str) -> Reply {
        self.try_get(path_and_query).unwrap()
    }

    /// Access-log lines (one per request nginx answered).
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (a SIGKILL would leave
        // them running, holding the port).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx on PATH or in /usr/sbin; installed from Debian's packages when
/// missing and we may (root), as the test needs it.
fn nginx_binary() -> PathBuf {
    let find = || {
        ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = find() {
        return path;
    }
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs nginx (Debian: `apt-get install nginx-light`); not root, so not installing it"
    );
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light",
        ])
        .status()
        .expect("run apt-get");
    assert!(installed.success(), "apt-get install nginx-light failed");
    find().expect("nginx installed but not found")
}
