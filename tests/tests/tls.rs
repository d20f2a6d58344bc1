//! TLS and secrets end to end: a learner serving TLS with a self-signed certificate and a token
//! from `--token-file`, a worker connecting over https with the certificate as its CA and the
//! token from `$ASRL_TOKEN`; the run completes, plaintext and token-less clients are refused,
//! and the token is nowhere in the run directory or the logs.

use std::path::Path;
use std::time::{Duration, Instant};

use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use asrl_tests::free_port;
use asrl_tests::procs::{grpo_config, grpo_phase_completions, log_of, spawn_logged, RunShape};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

const TOKEN: &str = "tls-test-token-5f2c9e";

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path)
}

async fn tls_channel(port: u16, ca: &Path) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap())).domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{port}")).unwrap().tls_config(tls)?.connect().await
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_tls_with_the_token_from_a_file_and_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (cert, key) = self_signed(dir);
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let shape = RunShape { questions: 2, prompts_per_lease: 2, max_new_tokens: 8, heartbeat_ms: 300 };
    let config = grpo_config(dir, &addr, &shape, "");

    let args = ["train", "--config", config.to_str().unwrap(), "--token-file", token_file.to_str().unwrap()];
    let tls_args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let mut learner = spawn_logged(dir, "learner.log", "asrl-learner", &[&args[..], &tls_args[..]].concat(), &[]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        if let Ok(ch) = tls_channel(port, &cert).await {
            break ch;
        }
        assert!(learner.try_wait().is_none(), "learner exited:\n{}", log_of(dir, "learner.log"));
        assert!(Instant::now() < deadline, "no TLS listener after 60 s:\n{}", log_of(dir, "learner.log"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut client = LearnerClient::new(channel);
    let e = client.get_status(pb::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "TLS does not replace the token");
    client.get_status(with_token(pb::GetStatusRequest {}, TOKEN)).await.unwrap();
    // A plaintext client gets nowhere.
    if let Ok(mut plain) = LearnerClient::connect(format!("http://{addr}")).await {
        assert!(plain.get_status(with_token(pb::GetStatusRequest {}, TOKEN)).await.is_err(), "plaintext call answered");
    }

    let url = format!("https://localhost:{port}");
    let worker_args = ["run", "--config", config.to_str().unwrap(), "--learner", &url, "--tls-ca", cert.to_str().unwrap(), "--name", "w"];
    let _worker = spawn_logged(dir, "w.log", "asrl-rollout-worker", &worker_args, &[("ASRL_TOKEN", TOKEN)]);

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = learner.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "run not done:\n{}\n--- worker\n{}", log_of(dir, "learner.log"), log_of(dir, "w.log"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "learner exited with {status}:\n{}\n--- worker\n{}", log_of(dir, "learner.log"), log_of(dir, "w.log"));
    let run = dir.join("run");
    assert_eq!(grpo_phase_completions(&run), vec![2 * 3], "the worker's groups came over TLS");

    // The token is in no file of the run directory and in no log.
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("tls_cert"), "{resolved}");
    let mut stack = vec![run.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "token written to {}", path.display());
            }
        }
    }
    for log in ["learner.log", "w.log"] {
        assert!(!log_of(dir, log).contains(TOKEN), "token in {log}");
    }
}
