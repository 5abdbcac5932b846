using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Analytics.Testing;

/// <summary>What a <see cref="DovecotRig"/> is started with.</summary>
internal sealed record DovecotRigOptions
{
    /// <summary>The LMTP port on 127.0.0.1; 0 picks a free one.</summary>
    public int LmtpPort { get; init; }

    /// <summary>
    /// The mailboxes (user@domain) it knows, from a passwd-file userdb: LMTP refuses any other recipient
    /// with 550 5.1.1. Null: every address is a mailbox (static userdb).
    /// </summary>
    public IReadOnlyList<string>? Users { get; init; }

    /// <summary>
    /// Accounts (user@domain → password) that may log in, from a passwd-file passdb with salted hashes,
    /// over PLAIN and LOGIN, in the clear too (loopback only). Null: no password is checked (static passdb).
    /// </summary>
    public IReadOnlyDictionary<string, string>? Passwords { get; init; }

    /// <summary>
    /// Serve Dovecot's authentication to Postfix's SASL client on this socket (a <see cref="PostfixRig"/>'s
    /// <see cref="PostfixRig.SaslSocket"/>, owned by postfix). Null: none.
    /// </summary>
    public string? PostfixAuthSocket { get; init; }

    /// <summary>Extra dovecot.conf lines, appended last (e.g. an <c>auth_policy_server_url</c>, a <c>service</c> block).</summary>
    public IReadOnlyList<string> ExtraConfig { get; init; } = [];
}

/// <summary>
/// A Dovecot instance of a test's own: its own <c>base_dir</c>, <c>state_dir</c>, log file and
/// <c>instance_name</c> in a temporary folder, started with <c>dovecot -c FILE</c> (Dovecot 2.3 runs
/// without systemd), never the machine's own. It serves LMTP on a loopback port and on a Unix socket
/// (<see cref="LmtpSocket"/>) and delivers into a Maildir per user (<see cref="Messages"/>). Needs
/// the Debian <c>dovecot-core</c> and <c>dovecot-lmtpd</c> packages and root; <see cref="MissingReason"/>
/// says why not, for a skip. Shared by the test projects (linked, not copied).
/// </summary>
internal sealed class DovecotRig : IAsyncDisposable
{
    private const string Dovecot = "/usr/sbin/dovecot";
    private bool _running;

    private DovecotRig(string root, int port)
    {
        Root = root;
        LmtpPort = port;
    }

    public static string? MissingReason =>
        !File.Exists(Dovecot) || !File.Exists("/usr/lib/dovecot/lmtp")
            ? "Dovecot LMTP is not installed (apt-get install dovecot-core dovecot-lmtpd; .ci/run does)"
            : !PostfixRig.IsRoot() ? "Dovecot rigs need root" : null;

    public string Root { get; }

    public string ConfigFile => Path.Combine(Root, "dovecot.conf");

    public string BaseDirectory => Path.Combine(Root, "run");

    public string LogPath => Path.Combine(Root, "dovecot.log");

    public string MailRoot => Path.Combine(Root, "mail");

    public int LmtpPort { get; }

    public IPEndPoint LmtpEndPoint => new(IPAddress.Loopback, LmtpPort);

    /// <summary><c>127.0.0.1:PORT</c>, as a next hop is configured.</summary>
    public string LmtpHostPort => "127.0.0.1:" + LmtpPort.ToString(CultureInfo.InvariantCulture);

    /// <summary>The LMTP Unix socket (mode 0666), as Dovecot's own <c>/run/dovecot/lmtp</c>.</summary>
    public string LmtpSocket => Path.Combine(BaseDirectory, "lmtp");

    public static async Task<DovecotRig> StartAsync(string root, DovecotRigOptions? options = null)
    {
        options ??= new DovecotRigOptions();
        if (MissingReason is { } reason)
        {
            throw new InvalidOperationException(reason);
        }

        var rig = new DovecotRig(root, options.LmtpPort != 0 ? options.LmtpPort : PostfixRig.FreePort());
        Directory.CreateDirectory(root);
        Directory.CreateDirectory(rig.MailRoot);
        Directory.CreateDirectory(Path.Combine(root, "state"));
        File.SetUnixFileMode(root, (UnixFileMode)0b111_101_101);
        var (uid, gid) = PostfixRig.IdsOf("dovecot");
        PostfixRig.Chown(rig.MailRoot, uid, gid);

        string userdb;
        if (options.Users is { } users)
        {
            // The auth worker runs unprivileged: the file and the folders above it must be readable by it.
            var file = Path.Combine(root, "users");
            await File.WriteAllLinesAsync(file, users.Select(u => $"{u.ToLowerInvariant()}::{uid}:{gid}::{rig.HomeOf(u)}::"));
            File.SetUnixFileMode(file, (UnixFileMode)0b110_100_100);
            userdb = $"userdb {{\n  driver = passwd-file\n  args = username_format=%Lu {file}\n}}";
        }
        else
        {
            userdb = $"userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={rig.MailRoot}/%Ld/%Ln\n}}";
        }

        var passdb = "passdb {\n  driver = static\n  args = nopassword=y\n}";
        if (options.Passwords is { } passwords)
        {
            var file = Path.Combine(root, "passwords");
            await File.WriteAllLinesAsync(file, passwords.Select(p => $"{p.Key.ToLowerInvariant()}:{Ssha256(p.Value)}::::::"));
            File.SetUnixFileMode(file, (UnixFileMode)0b110_100_100);
            passdb = $"passdb {{\n  driver = passwd-file\n  args = scheme=SSHA256 username_format=%Lu {file}\n}}\nauth_mechanisms = plain login\ndisable_plaintext_auth = no";
        }

        var authSocket = options.PostfixAuthSocket is { } socket
            ? $"service auth {{\n  unix_listener {socket} {{\n    mode = 0660\n    user = postfix\n    group = postfix\n  }}\n}}"
            : "";
        var name = "rig" + Guid.NewGuid().ToString("N")[..8];
        var config = new StringBuilder($$"""
            base_dir = {{rig.BaseDirectory}}
            state_dir = {{Path.Combine(root, "state")}}
            instance_name = {{name}}
            protocols = lmtp
            listen = 127.0.0.1
            log_path = {{rig.LogPath}}
            ssl = no
            default_internal_user = dovecot
            default_login_user = dovenull
            mail_location = maildir:~/Maildir
            first_valid_uid = 1
            lmtp_save_to_detail_mailbox = no
            recipient_delimiter =
            {{passdb}}
            {{userdb}}
            {{authSocket}}
            service lmtp {
              inet_listener lmtp {
                address = 127.0.0.1
                port = {{rig.LmtpPort}}
              }
              unix_listener lmtp {
                mode = 0666
              }
            }
            service anvil {
              chroot =
            }

            """);
        foreach (var line in options.ExtraConfig)
        {
            config.AppendLine(line);
        }

        await File.WriteAllTextAsync(rig.ConfigFile, config.ToString());
        await rig.StartAsync();
        return rig;
    }

    /// <summary>Dovecot's <c>{SSHA256}</c> scheme: base64(SHA-256(password ‖ salt) ‖ salt).</summary>
    private static string Ssha256(string password)
    {
        var salt = System.Security.Cryptography.RandomNumberGenerator.GetBytes(8);
        var hash = System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(password).Concat(salt).ToArray());
        return "{SSHA256}" + Convert.ToBase64String(hash.Concat(salt).ToArray());
    }

    public async Task StartAsync()
    {
        await PostfixRig.RunAsync(Dovecot, "-c", ConfigFile);
        _running = true;
        var until = Stopwatch.StartNew();
        while (true)
        {
            using var probe = new TcpClient();
            try
            {
                await probe.ConnectAsync(IPAddress.Loopback, LmtpPort);
                return;
            }
            catch (SocketException) when (until.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(100);
            }
        }
    }

    public async Task StopAsync()
    {
        if (!_running)
        {
            return;
        }

        _running = false;
        await PostfixRig.RunAsync(Dovecot, "-c", ConfigFile, "stop");
    }

    /// <summary>The messages delivered to <paramref name="address"/>'s INBOX so far, oldest first.</summary>
    public IReadOnlyList<byte[]> Messages(string address) => Maildir.Read(Path.Combine(HomeOf(address), "Maildir"));

    public Task<IReadOnlyList<byte[]>> WaitForMessagesAsync(string address, int count, TimeSpan timeout) =>
        Maildir.WaitAsync(() => Messages(address), count, timeout, () => LogText);

    public string LogText => File.Exists(LogPath) ? PostfixRig.ReadShared(LogPath) : "";

    private string HomeOf(string address)
    {
        var at = address.LastIndexOf('@');
        return Path.Combine(MailRoot, address[(at + 1)..].ToLowerInvariant(), address[..at].ToLowerInvariant());
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        catch (InvalidOperationException)
        {
        }
    }
}
