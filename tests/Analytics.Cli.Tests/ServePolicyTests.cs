using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>`serve` beside Postfix and Dovecot: the Policy section, as real processes over loopback (the protocols spoken by hand here; the real Postfix and Dovecot are in Analytics.Policy.Tests).</summary>
public sealed partial class ServePolicyTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    [Fact]
    public async Task Serve_WithAPolicySection_SaysWhereItListens_AnswersBoth_AndRecordsWhatItSaw()
    {
        using var dir = new TempDirectory();
        var data = dir.Path;
        var socket = Path.Combine(data, "policy.sock");
        var maillog = Path.Combine(data, "maillog");
        await File.WriteAllTextAsync(maillog, "", Ct);
        var dovecot = FreePort();
        var config = Path.Combine(data, "policy.json");
        await File.WriteAllTextAsync(config, new JsonObject
        {
            ["Submission"] = new JsonObject { ["Enabled"] = false },
            ["Policy"] = new JsonObject
            {
                ["PostfixEndpoint"] = "unix:" + socket,
                ["PostfixSocketMode"] = "0600",
                ["DovecotEndpoint"] = "127.0.0.1:" + dovecot.ToString(CultureInfo.InvariantCulture),
                ["MailLog"] = maillog,
            },
        }.ToJsonString(), Ct);

        await using var serve = CliProcess.Start("serve", "--data", data, "--config", config, "--http", "127.0.0.1:0");
        await serve.WaitForOutputAsync(" serving; ", TimeSpan.FromSeconds(60));
        Assert.Contains("submission none; submission implicit TLS none; mx none", serve.Stderr, StringComparison.Ordinal);
        Assert.Contains($"Postfix policy service listening on unix:{socket}", serve.Stderr, StringComparison.Ordinal);
        Assert.Contains($"Dovecot auth policy server listening on http://127.0.0.1:{dovecot}/", serve.Stderr, StringComparison.Ordinal);
        Assert.Contains($"Following Postfix's log {maillog}", serve.Stderr, StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(socket));

        // Postfix's side: a RCPT, then garbage on the same connection, then the end of the message.
        using (var postfix = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            await postfix.ConnectAsync(new UnixDomainSocketEndPoint(socket), Ct);
            Assert.Equal("action=DUNNO", await AskAsync(postfix, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.70.0.1\nclient_port=1234\n" +
                "sasl_username=ann@example.test\nsender=ann@example.test\nrecipient=bob@example.net\ninstance=a.b.c.0\n\n"));
            Assert.Equal("action=DUNNO", await AskAsync(postfix, "garbage\n\n"));
            Assert.Equal("action=DUNNO", await AskAsync(postfix, "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nclient_address=127.70.0.1\nclient_port=1234\n" +
                "sasl_username=ann@example.test\nrecipient_count=1\nsize=300\nqueue_id=Q1\ninstance=a.b.c.0\n\n"));
        }

        // Dovecot's side: a failed login.
        using (var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{dovecot}/") })
        {
            using var allow = await http.PostAsync("?command=allow", new StringContent("""{"login":"eve@example.test","remote":"127.70.0.2","pwhash":"1a2","protocol":"imap"}"""), Ct);
            Assert.Contains("\"status\":0", await allow.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
            using var report = await http.PostAsync("?command=report", new StringContent("""{"login":"eve@example.test","remote":"127.70.0.2","pwhash":"1a2","protocol":"imap","success":false,"policy_reject":false}"""), Ct);
            Assert.True(report.IsSuccessStatusCode);
        }

        // Postfix's log: a recipient it rejected as unknown.
        await File.AppendAllTextAsync(maillog,
            "Dec  1 03:00:00 mx postfix/smtpd[42]: NOQUEUE: reject: RCPT from unknown[127.70.0.3]: 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<x@y.example> to=<nobody@example.test> proto=ESMTP helo=<h>\n", Ct);
        await Task.Delay(1000, Ct);

        serve.Terminate();
        Assert.Equal(0, await serve.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("Postfix policy request answered DUNNO: a line without '='", serve.Stderr, StringComparison.Ordinal);
        var (code, stdout, stderr) = await CliProcess.RunAsync("sql",
            "SELECT node, kind, reply_code, user, recipient FROM events ORDER BY node, ts, kind", "--format", "tsv", "--data", data);
        Assert.True(code == 0, stderr);
        var rows = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToList();
        Assert.Contains("dovecot\tauth\t535\teve@example.test\t", rows);
        Assert.Contains("postfix\trcpt\t250\tann@example.test\tbob@example.net", rows);
        Assert.Contains("postfix\tdata\t250\tann@example.test\t", rows);
        Assert.Contains("postfix\trcpt\t550\t\tnobody@example.test", rows);
    }

    [Theory]
    [InlineData("DovecotEndpoint", "10.0.0.1:8080", "only a loopback address")]
    [InlineData("PostfixEndpoint", "unix:relative/path", "must be absolute")]
    [InlineData("MailLog", "/no/such/folder/maillog", "its folder does not exist")]
    public async Task Serve_BadPolicySettings_FailBeforeAnythingOpens(string key, string value, string message)
    {
        using var dir = new TempDirectory();
        var config = Path.Combine(dir.Path, "bad.json");
        await File.WriteAllTextAsync(config, new JsonObject { ["Policy"] = new JsonObject { [key] = value } }.ToJsonString(), Ct);

        var (code, _, stderr) = await CliProcess.RunAsync("serve", "--data", dir.Path, "--config", config, "--submission", "127.0.0.1:0", "--mx", "127.0.0.1:0");

        Assert.Equal(2, code);
        Assert.Contains($"Policy:{key}", stderr, StringComparison.Ordinal);
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(dir.Path, "admin.sock")));

        var (checkCode, stdout, _) = await CliProcess.RunAsync("config", "check", config);
        Assert.Equal(2, checkCode);
        Assert.Matches(ErrorLine(), stdout);
    }

    private static async Task<string> AskAsync(Socket socket, string request)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes(request), Ct);
        var buffer = new byte[512];
        var length = 0;
        while (length < 2 || buffer[length - 1] != '\n' || buffer[length - 2] != '\n')
        {
            length += await socket.ReceiveAsync(buffer.AsMemory(length), Ct);
        }

        return Encoding.ASCII.GetString(buffer, 0, length).TrimEnd('\n');
    }

    [GeneratedRegex(@"error:\s+Policy:")]
    private static partial Regex ErrorLine();
}
