using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Analytics.Testing;

/// <summary>What a <see cref="PostfixRig"/> is started with.</summary>
internal sealed record PostfixRigOptions
{
    /// <summary>The smtpd port on 127.0.0.1; 0 picks a free one.</summary>
    public int Port { get; init; }

    /// <summary>
    /// Domains delivered into the Maildir <see cref="PostfixRig.Maildir"/> by Postfix's virtual delivery
    /// agent (which stamps each copy with <c>Delivered-To:</c>). Null: every domain.
    /// </summary>
    public IReadOnlyList<string>? Domains { get; init; }

    /// <summary>
    /// The mailboxes of <see cref="Domains"/> (a virtual_mailbox_maps of their own): any other address in
    /// those domains is refused at RCPT with Postfix's own <c>550 5.1.1 … User unknown in virtual mailbox
    /// table</c>. Null: every address is a mailbox.
    /// </summary>
    public IReadOnlyList<string>? Mailboxes { get; init; }

    /// <summary>
    /// A submission service: a second smtpd on this loopback port (0 picks a free one) with SASL AUTH
    /// through Dovecot (<see cref="PostfixRig.SaslSocket"/>, which a <see cref="DovecotRig"/> started with
    /// <see cref="DovecotRigOptions.PostfixAuthSocket"/> serves). Null: none.
    /// </summary>
    public int? SubmissionPort { get; init; }

    /// <summary>PEM certificate and key for STARTTLS on every smtpd (security level <c>may</c>). Null: no TLS.</summary>
    public (string Certificate, string Key)? Tls { get; init; }

    /// <summary>Recipients the smtpd refuses at RCPT, with the reply (e.g. <c>550 5.1.1 No such user</c>).</summary>
    public IReadOnlyDictionary<string, string> RejectRecipients { get; init; } = new Dictionary<string, string>();

    /// <summary>Extra main.cf settings (<c>name = value</c>), applied last with <c>postconf -e</c>.</summary>
    public IReadOnlyList<string> MainCf { get; init; } = [];

    /// <summary>
    /// Extra master.cf service lines (<c>127.0.0.1:PORT inet n - n - - smtpd</c> followed by <c>-o</c>
    /// lines), appended as they are. Services run without chroot.
    /// </summary>
    public IReadOnlyList<string> MasterCf { get; init; } = [];

    /// <summary>Leave it configured but stopped (start it later with <see cref="PostfixRig.StartAsync()"/>).</summary>
    public bool Stopped { get; init; }
}

/// <summary>
/// A Postfix instance of a test's own, on a loopback port: its own <c>config_directory</c>,
/// <c>queue_directory</c>, <c>data_directory</c> and <c>maillog_file</c> in a temporary folder, so the
/// machine's own Postfix (if any) is never touched. It accepts mail from 127.0.0.0/8 and delivers
/// each recipient into a Maildir (<see cref="Messages"/>). Needs the Debian <c>postfix</c> package
/// and root (Postfix 3.7 runs without systemd); <see cref="MissingReason"/> says why not, for a skip.
/// Shared by the test projects (linked, not copied): the delivery tests use it as a smarthost, a policy
/// test can add a <c>check_policy_service</c> through <see cref="PostfixRigOptions.MainCf"/>.
/// </summary>
internal sealed class PostfixRig : IAsyncDisposable
{
    private const string Postfix = "/usr/sbin/postfix";
    private const string Postconf = "/usr/sbin/postconf";
    private bool _running;

    private PostfixRig(string root, int port, int submissionPort)
    {
        Root = root;
        Port = port;
        SubmissionPort = submissionPort;
    }

    /// <summary>Null when a rig can start here; otherwise why not (for Assert.Skip).</summary>
    public static string? MissingReason =>
        !File.Exists(Postfix) || !File.Exists(Postconf) || !File.Exists("/usr/lib/postfix/sbin/master")
            ? "Postfix is not installed (apt-get install postfix; .ci/run does)"
            : Environment.UserName != "root" && Environment.GetEnvironmentVariable("USER") != "root" && !IsRoot()
                ? "Postfix rigs need root (the master process runs as root)"
                : null;

    public string Root { get; }

    public string ConfigDirectory => Path.Combine(Root, "etc");

    public string QueueDirectory => Path.Combine(Root, "queue");

    public string MailLog => Path.Combine(Root, "maillog");

    public string MaildirRoot => Path.Combine(Root, "mail");

    /// <summary>The one Maildir every recipient's copy goes to (virtual(8) allows no per-address substitution).</summary>
    public string MaildirPath => Path.Combine(MaildirRoot, "all");

    public int Port { get; }

    public IPEndPoint EndPoint => new(IPAddress.Loopback, Port);

    /// <summary>The submission service's port (<see cref="PostfixRigOptions.SubmissionPort"/>); 0 when there is none.</summary>
    public int SubmissionPort { get; }

    public IPEndPoint SubmissionEndPoint => new(IPAddress.Loopback, SubmissionPort);

    /// <summary>Where Postfix's SASL client finds Dovecot's auth socket (<c>private/auth</c> in the queue directory).</summary>
    public string SaslSocket => Path.Combine(QueueDirectory, "private", "auth");

    /// <summary><c>127.0.0.1:PORT</c>, as a next hop is configured.</summary>
    public string HostPort => "127.0.0.1:" + Port.ToString(CultureInfo.InvariantCulture);

    public static async Task<PostfixRig> CreateAsync(string root, PostfixRigOptions? options = null)
    {
        options ??= new PostfixRigOptions();
        if (MissingReason is { } reason)
        {
            throw new InvalidOperationException(reason);
        }

        var rig = new PostfixRig(root, options.Port != 0 ? options.Port : FreePort(),
            options.SubmissionPort is { } submission ? (submission != 0 ? submission : FreePort()) : 0);
        Directory.CreateDirectory(rig.ConfigDirectory);
        Directory.CreateDirectory(rig.QueueDirectory);
        Directory.CreateDirectory(Path.Combine(root, "data"));
        Directory.CreateDirectory(rig.MaildirRoot);
        File.SetUnixFileMode(root, (UnixFileMode)0b111_101_101);
        var (uid, gid) = PostfixIds();
        Chown(Path.Combine(root, "data"), uid, gid);
        Chown(rig.MaildirRoot, uid, gid);

        File.Copy("/etc/postfix/master.cf", Path.Combine(rig.ConfigDirectory, "master.cf"));
        await File.WriteAllTextAsync(Path.Combine(rig.ConfigDirectory, "main.cf"), "");
        foreach (var map in new[] { "dynamicmaps.cf" })
        {
            if (File.Exists("/etc/postfix/" + map))
            {
                File.Copy("/etc/postfix/" + map, Path.Combine(rig.ConfigDirectory, map));
            }
        }

        await File.WriteAllLinesAsync(Path.Combine(rig.ConfigDirectory, "recipient_access"),
            options.RejectRecipients.Select(r => $"{r.Key} {r.Value}"));
        await File.WriteAllLinesAsync(Path.Combine(rig.ConfigDirectory, "mailboxes"), (options.Mailboxes ?? []).Select(m => $"{m.ToLowerInvariant()} all/"));

        var etc = rig.ConfigDirectory;
        await rig.PostconfAsync("-F", "*/*/chroot = n");
        await rig.PostconfAsync("-MX", "smtp/inet");
        await rig.PostconfAsync("-M", $"{rig.HostPort}/inet={rig.HostPort} inet n - n - - smtpd");
        if (rig.SubmissionPort != 0)
        {
            var service = "127.0.0.1:" + rig.SubmissionPort.ToString(CultureInfo.InvariantCulture);
            await rig.PostconfAsync("-M", $"{service}/inet={service} inet n - n - - smtpd");
            await rig.PostconfAsync("-P", $"{service}/inet/smtpd_sasl_auth_enable=yes", $"{service}/inet/smtpd_sasl_type=dovecot",
                $"{service}/inet/smtpd_sasl_path=private/auth");
        }

        await rig.PostconfAsync("-e",
            $"queue_directory={rig.QueueDirectory}",
            $"data_directory={Path.Combine(root, "data")}",
            "meta_directory=/etc/postfix",
            $"maillog_file={rig.MailLog}",
            $"maillog_file_prefixes={root}",
            "inet_interfaces=127.0.0.1",
            "inet_protocols=ipv4",
            "mynetworks=127.0.0.0/8",
            "myhostname=postfix-rig.test",
            "mydestination=",
            "relayhost=",
            "alias_maps=",
            "alias_database=",
            "compatibility_level=3.6",
            "smtputf8_enable=no",
            "biff=no",
            $"virtual_mailbox_domains={(options.Domains is { } domains ? string.Join(' ', domains) : "static:all")}",
            $"virtual_mailbox_base={rig.MaildirRoot}",
            options.Mailboxes is null ? "virtual_mailbox_maps=static:all/" : $"virtual_mailbox_maps=texthash:{etc}/mailboxes",
            $"virtual_uid_maps=static:{uid}",
            $"virtual_gid_maps=static:{gid}",
            $"smtpd_recipient_restrictions=check_recipient_access texthash:{etc}/recipient_access, permit_mynetworks, reject",
            "smtpd_relay_restrictions=permit_mynetworks, reject",
            // A message from 127.0.0.1 is "local": do not add headers it lacks, so what arrives is what was sent.
            "local_header_rewrite_clients=",
            // Loopback only: no DNS, ever (a bounce or a relay never looks a domain up).
            "smtp_dns_support_level=disabled",
            "smtpd_peername_lookup=no",
            "queue_run_delay=1s",
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s");
        if (options.Tls is { } tls)
        {
            await rig.PostconfAsync("-e", $"smtpd_tls_cert_file={tls.Certificate}", $"smtpd_tls_key_file={tls.Key}", "smtpd_tls_security_level=may");
        }

        if (options.MainCf.Count > 0)
        {
            await rig.PostconfAsync(["-e", .. options.MainCf]);
        }

        if (options.MasterCf.Count > 0)
        {
            await File.AppendAllLinesAsync(Path.Combine(etc, "master.cf"), options.MasterCf);
        }

        if (!options.Stopped)
        {
            await rig.StartAsync();
        }

        return rig;
    }

    /// <summary>Runs <c>postconf -c CONFIG_DIRECTORY ARGS</c> (e.g. <c>-e name=value</c>); throws with its output on failure.</summary>
    public Task<string> PostconfAsync(params string[] args) => RunAsync(Postconf, ["-c", ConfigDirectory, .. args]);

    /// <summary>Starts the instance and waits until its port answers.</summary>
    public async Task StartAsync()
    {
        await RunAsync(Postfix, "-c", ConfigDirectory, "start");
        _running = true;
        await WaitForPortAsync(listening: true);
    }

    /// <summary>Stops the instance (<c>postfix stop</c>) and waits until its port is closed.</summary>
    public async Task StopAsync()
    {
        if (!_running)
        {
            return;
        }

        _running = false;
        await RunAsync(Postfix, "-c", ConfigDirectory, "stop");
        await WaitForPortAsync(listening: false);
    }

    /// <summary>The copies delivered to <paramref name="address"/> so far (by their <c>Delivered-To:</c>), oldest first, as in the Maildir (LF line ends).</summary>
    public IReadOnlyList<byte[]> Messages(string address) =>
        [.. AllMessages().Where(m => string.Equals(Maildir.Header(m, "Delivered-To"), address, StringComparison.OrdinalIgnoreCase))];

    /// <summary>Every copy delivered so far, to anyone.</summary>
    public IReadOnlyList<byte[]> AllMessages() => Maildir.Read(MaildirPath);

    public Task<IReadOnlyList<byte[]>> WaitForMessagesAsync(string address, int count, TimeSpan timeout) =>
        Maildir.WaitAsync(() => Messages(address), count, timeout, () => MailLogText);

    public string MailLogText => File.Exists(MailLog) ? ReadShared(MailLog) : "";

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        catch (InvalidOperationException)
        {
            // Already gone; nothing of ours is left running.
        }
    }

    private async Task WaitForPortAsync(bool listening)
    {
        var until = Stopwatch.StartNew();
        while (until.Elapsed < TimeSpan.FromSeconds(30))
        {
            using var probe = new TcpClient();
            var open = false;
            try
            {
                await probe.ConnectAsync(IPAddress.Loopback, Port);
                open = true;
            }
            catch (SocketException)
            {
            }

            if (open == listening)
            {
                return;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"Postfix on {HostPort} did not {(listening ? "start" : "stop")}. Log:\n{MailLogText}");
    }

    internal static async Task<string> RunAsync(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {process.ExitCode}: {await stdout}{await stderr}");
        }

        return await stdout;
    }

    internal static string ReadShared(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    internal static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    internal static bool IsRoot()
    {
        try
        {
            return File.ReadLines("/proc/self/status").Any(l => l.StartsWith("Uid:", StringComparison.Ordinal) && l.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1] == "0");
        }
        catch (IOException)
        {
            return false;
        }
    }

    internal static (int Uid, int Gid) IdsOf(string user)
    {
        foreach (var line in File.ReadLines("/etc/passwd"))
        {
            var f = line.Split(':');
            if (f.Length > 3 && f[0] == user)
            {
                return (int.Parse(f[2], CultureInfo.InvariantCulture), int.Parse(f[3], CultureInfo.InvariantCulture));
            }
        }

        throw new InvalidOperationException($"No user {user} in /etc/passwd.");
    }

    private static (int Uid, int Gid) PostfixIds() => IdsOf("postfix");

    internal static void Chown(string path, int uid, int gid)
    {
        if (Native.Chown(path, uid, gid) != 0)
        {
            throw new IOException($"chown {path} failed (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}).");
        }
    }

    private static class Native
    {
        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "chown", SetLastError = true)]
        public static extern int Chown([System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path, int uid, int gid);
    }
}

/// <summary>Reads Maildirs that a mail server of a rig delivers into.</summary>
internal static class Maildir
{
    public static IReadOnlyList<byte[]> Read(string maildir)
    {
        var files = new List<FileInfo>();
        foreach (var sub in new[] { "new", "cur" })
        {
            var d = new DirectoryInfo(Path.Combine(maildir, sub));
            if (d.Exists)
            {
                files.AddRange(d.GetFiles());
            }
        }

        return [.. files.OrderBy(f => f.LastWriteTimeUtc).ThenBy(f => f.Name, StringComparer.Ordinal).Select(f => File.ReadAllBytes(f.FullName))];
    }

    /// <summary>The first value of a header field in the message's header block (unfolded), or null.</summary>
    public static string? Header(byte[] message, string name)
    {
        var text = System.Text.Encoding.UTF8.GetString(message).Replace("\r\n", "\n", StringComparison.Ordinal);
        var end = text.IndexOf("\n\n", StringComparison.Ordinal);
        foreach (var line in (end >= 0 ? text[..end] : text).Split('\n'))
        {
            if (line.StartsWith(name + ":", StringComparison.OrdinalIgnoreCase))
            {
                return line[(name.Length + 1)..].Trim();
            }
        }

        return null;
    }

    public static async Task<IReadOnlyList<byte[]>> WaitAsync(Func<IReadOnlyList<byte[]>> read, int count, TimeSpan timeout, Func<string> log)
    {
        var until = Stopwatch.StartNew();
        while (true)
        {
            var messages = read();
            if (messages.Count >= count)
            {
                return messages;
            }

            if (until.Elapsed > timeout)
            {
                throw new TimeoutException($"{messages.Count} of {count} messages arrived in {timeout}. Log:\n{log()}");
            }

            await Task.Delay(100);
        }
    }
}
