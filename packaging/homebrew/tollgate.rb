# Homebrew formula for tollgate. The release job fills in `url` and `sha256`; to try it from a
# checkout: `brew install --build-from-source ./packaging/homebrew/tollgate.rb`.
class Tollgate < Formula
  desc "Local AI gateway: keychain credentials, cache, redaction, budgets and routing"
  homepage "https://gitlab.com/tollgate/tollgate"
  url "https://gitlab.com/tollgate/tollgate/-/archive/v0.1.0/tollgate-v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://gitlab.com/tollgate/tollgate.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args(path: "daemon")
    generate_completions_from_executable(bin/"tollgate", "completions")
    (man1/"tollgate.1").write Utils.safe_popen_read(bin/"tollgate", "man")
  end

  service do
    run [opt_bin/"tollgate", "daemon"]
    keep_alive successful_exit: false
    log_path var/"log/tollgate.log"
    error_log_path var/"log/tollgate.log"
  end

  test do
    assert_match "tollgate #{version}", shell_output("#{bin}/tollgate --version")
    (testpath/"a.txt").write "nothing secret here\n"
    system bin/"tollgate", "scan", testpath/"a.txt"
  end
end
