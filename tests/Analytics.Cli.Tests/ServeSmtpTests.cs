using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>`serve` with the SMTP listener, and the directory verbs against it, all as real processes over loopback.</summary>
public sealed class ServeSmtpTests
{
    private const string Password = "tr0ub4dor & 3, with spaces";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    [Fact]
    public async Task Serve_RunsTheListener_DirectoryChangesApplyAtOnce_SigtermFlushesEvents()
    {
        using var dir = new TempDirectory();
        var data = dir.Path;
        int submission = FreePort(), mx = FreePort();
        await using var serve = CliProcess.Start("serve", "--data", data, "--submission", $"127.0.0.1:{submission}", "--mx", $"127.0.0.1:{mx}", "--http", "127.0.0.1:0");
        await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));
        Assert.Contains($"submission 127.0.0.1:{submission}; submission implicit TLS none; mx 127.0.0.1:{mx}", serve.Stderr, StringComparison.Ordinal);

        // A user added through the running server can AUTH at once (password from stdin, never argv).
        var (code, stdout, stderr) = await CliProcess.RunWithInputAsync(Password + "\n", "users", "add", "Ann@Example.test", "--data", data);
        Assert.True(code == 0, stderr);
        Assert.Contains("ann@example.test added", stdout, StringComparison.Ordinal);
        (code, _, stderr) = await CliProcess.RunWithInputAsync("other\n", "users", "add", "ann@example.test", "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("already exists", stderr, StringComparison.Ordinal);
        (code, _, stderr) = await CliProcess.RunAsync("users", "disable", "nobody@example.test", "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("No user", stderr, StringComparison.Ordinal);

        // Recipients: a file by relative path (the server reads it), then one address; a bad one is refused.
        await File.WriteAllTextAsync(Path.Combine(data, "mailboxes.txt"), "# local\nbob@example.test\n", Ct);
        (code, stdout, stderr) = await CliProcess.RunInAsync(data, "recipients", "import", "mailboxes.txt", "--data", data);
        Assert.True(code == 0, stderr);
        Assert.Contains("1 mailbox", stdout, StringComparison.Ordinal);
        (code, _, stderr) = await CliProcess.RunAsync("recipients", "add", "not an address@", "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("neither a domain nor an address", stderr, StringComparison.Ordinal);

        using (var client = await ConnectAsync(data, submission))
        {
            await client.AuthenticateAsync("ann@example.test", Password, Ct);
            var message = new MimeMessage();
            message.From.Add(MailboxAddress.Parse("ann@example.test"));
            message.To.Add(MailboxAddress.Parse("bob@example.test"));
            message.To.Add(MailboxAddress.Parse("someone@elsewhere.example"));
            message.Subject = "through serve";
            message.Body = new TextPart("plain") { Text = "hello" };
            Assert.Contains("queued as", await client.SendAsync(message, Ct), StringComparison.Ordinal);
            await client.DisconnectAsync(true, Ct);
        }

        // MX: a mailbox added while serve runs is accepted at once; an unknown one gets 550 5.1.1.
        Assert.Equal(0, (await CliProcess.RunAsync("recipients", "add", "carol@example.test", "--data", data)).ExitCode);
        Assert.Equal(["250", "550"], await RcptOnMxAsync(mx, "carol@example.test", "nobody@example.test"));

        // Disabled through the server: AUTH fails at once.
        (code, _, stderr) = await CliProcess.RunAsync("users", "disable", "ann@example.test", "--data", data);
        Assert.True(code == 0, stderr);
        using (var client = await ConnectAsync(data, submission))
        {
            client.AuthenticationMechanisms.RemoveWhere(m => m != "PLAIN");
            var ex = await Assert.ThrowsAsync<AuthenticationException>(() => client.AuthenticateAsync("ann@example.test", Password, Ct));
            Assert.Contains("5.7.8", ex.Message, StringComparison.Ordinal);
        }

        serve.Terminate();
        Assert.Equal(0, await serve.WaitAsync(TimeSpan.FromSeconds(60)));

        // After the server has gone, the store opens here: every event was flushed before it closed.
        (code, stdout, stderr) = await CliProcess.RunAsync("sql",
            "SELECT countIf(kind = 'auth' AND outcome = 'ok'), countIf(kind = 'auth' AND outcome != 'ok'), countIf(kind = 'data'), " +
            "countIf(kind = 'rcpt' AND reply_code = 550), countIf(kind = 'close') FROM events",
            "--format", "tsv", "--data", data);
        Assert.True(code == 0, stderr);
        Assert.Equal("1\t1\t1\t1\t3", stdout.Split('\n')[1]);
    }

    [Fact]
    public async Task Serve_BadEndpoint_FailsWithOneLineAndExitCode2_BeforeOpeningAnything()
    {
        using var dir = new TempDirectory();
        var (code, stdout, stderr) = await CliProcess.RunAsync("serve", "--data", dir.Path, "--submission", "127.0.0.1:0", "--mx", "mx.example:25");
        Assert.Equal(2, code);
        var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("'mx.example:25' is not HOST:PORT", line, StringComparison.Ordinal);
        Assert.Empty(stdout);
        Assert.False(File.Exists(Path.Combine(dir.Path, "admin.sock")));
    }

    [Fact]
    public async Task Verbs_WithoutServer_WorkOnTheStoreDirectly()
    {
        using var dir = new TempDirectory();
        var (code, _, stderr) = await CliProcess.RunWithInputAsync("pw\n", "users", "add", "dan@example.test", "--data", dir.Path);
        Assert.True(code == 0, stderr);
        (code, _, stderr) = await CliProcess.RunWithInputAsync("", "users", "passwd", "dan@example.test", "--data", dir.Path);
        Assert.Equal(1, code);
        Assert.Contains("No password", stderr, StringComparison.Ordinal);
        (code, _, stderr) = await CliProcess.RunAsync("recipients", "add", "@example.test", "--data", dir.Path);
        Assert.True(code == 0, stderr);
        var (listCode, users, _) = await CliProcess.RunAsync("users", "list", "--data", dir.Path);
        Assert.Equal(0, listCode);
        Assert.Contains("dan@example.test  enabled", users, StringComparison.Ordinal);
        var (_, recipients, _) = await CliProcess.RunAsync("recipients", "list", "--data", dir.Path);
        Assert.Equal("@example.test\n", recipients);
    }

    private static async Task<SmtpClient> ConnectAsync(string data, int port)
    {
        // serve generated a self-signed certificate in DATA/keys: trust exactly that one.
        using var expected = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(data, "keys", "smtp-self-signed.pfx"), null);
        var thumbprint = expected.GetCertHashString();
        var client = new SmtpClient { ServerCertificateValidationCallback = (_, c, _, _) => c?.GetCertHashString() == thumbprint, Timeout = 20_000 };
        await client.ConnectAsync("127.0.0.1", port, SecureSocketOptions.StartTls, Ct);
        return client;
    }

    /// <summary>The reply codes to RCPT TO for each address, in one MX session.</summary>
    private static async Task<string[]> RcptOnMxAsync(int port, params string[] recipients)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port, Ct);
        using var reader = new StreamReader(tcp.GetStream(), Encoding.ASCII);
        await using var writer = new StreamWriter(tcp.GetStream(), Encoding.ASCII) { NewLine = "\r\n", AutoFlush = true };
        async Task<string> ReplyAsync()
        {
            string line;
            do
            {
                line = await reader.ReadLineAsync(Ct) ?? throw new IOException("closed");
            }
            while (line.Length > 3 && line[3] == '-');
            return line;
        }

        await ReplyAsync();
        await writer.WriteLineAsync("EHLO relay.example");
        await ReplyAsync();
        await writer.WriteLineAsync("MAIL FROM:<someone@elsewhere.example>");
        await ReplyAsync();
        var codes = new List<string>();
        foreach (var r in recipients)
        {
            await writer.WriteLineAsync($"RCPT TO:<{r}>");
            codes.Add((await ReplyAsync())[..3]);
        }

        await writer.WriteLineAsync("QUIT");
        await ReplyAsync();
        return [.. codes];
    }
}
