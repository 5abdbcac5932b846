using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;
using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>
/// These tests run alone (not beside the timing-sensitive scenario tests): a delivery burst with a Postfix
/// behind it takes both cores for a while.
/// </summary>
[CollectionDefinition(nameof(ServeDeliveryTests), DisableParallelization = true)]
public sealed class ServeDeliveryCollection;

/// <summary>`serve` delivering onward to a real Postfix, killed and restarted, and the queue verbs against it, all as real processes.</summary>
[Collection(nameof(ServeDeliveryTests))]
public sealed class ServeDeliveryTests
{
    private const string Password = "delivery test password";
    private const string User = "ann@example.test";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    private static async Task<string> SetUpAsync(string data, PostfixRig rig)
    {
        var config = Path.Combine(data, "..", "delivery.json");
        await File.WriteAllTextAsync(config, $$"""
            {
              "Submission": { "Policy": { "MessagesPerMinute": 0 } },
              "Detection": { "Enabled": false },
              "Delivery": {
                "Relay": { "Hosts": [ "{{rig.HostPort}}" ], "Tls": "None", "MaxConnections": 4 },
                "Concurrency": 4,
                "MinimalBackoff": "00:00:01",
                "MaximalBackoff": "00:00:02",
                "MinFreeBytes": 0
              }
            }
            """, Ct);
        var (code, _, stderr) = await CliProcess.RunWithInputAsync(Password + "\n", "users", "add", User, "--data", data);
        Assert.True(code == 0, stderr);
        return config;
    }

    private static CliProcess Serve(string data, string config, int submission, int http) =>
        CliProcess.Start("serve", "--data", data, "--config", config, "--submission", $"127.0.0.1:{submission}", "--mx", $"127.0.0.1:{FreePort()}",
            "--http", $"127.0.0.1:{http}");

    [Fact]
    public async Task Serve_KilledDuringADeliveryBurst_DeliversEveryAcceptedMessageAfterRestart()
    {
        if (PostfixRig.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }

        using var dir = new TempDirectory();
        var data = Path.Combine(dir.Path, "data");
        // The smarthost takes at most 40 messages per 5 s from us (a 452 past that, a temporary failure):
        // a backlog builds, so the kill finds messages queued, deferred and in flight.
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"), new PostfixRigOptions
        {
            MainCf = ["smtpd_client_event_limit_exceptions=", "smtpd_client_message_rate_limit=40", "anvil_rate_time_unit=5s"],
        });
        var config = await SetUpAsync(data, rig);
        var submission = FreePort();

        var accepted = new ConcurrentBag<string>();
        var serve = Serve(data, config, submission, FreePort());
        try
        {
            await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            var clients = Enumerable.Range(0, 4).Select(c => Task.Run(async () =>
            {
                for (var i = 0; i < 100 && !stop.IsCancellationRequested; i++)
                {
                    try
                    {
                        using var client = await ConnectAsync(data, submission);
                        for (var j = 0; j < 5 && !stop.IsCancellationRequested; j++)
                        {
                            var id = string.Create(CultureInfo.InvariantCulture, $"burst-{c}-{i}-{j}@test");
                            await client.SendAsync(Message(id, "sink@dest.test"), Ct);
                            accepted.Add(id);
                        }

                        await client.DisconnectAsync(true, Ct);
                    }
                    catch (SmtpCommandException) when (!stop.IsCancellationRequested)
                    {
                        await Task.Delay(100, CancellationToken.None); // a temporary refusal: try again
                    }
                    catch (Exception ex) when (ex is IOException or SocketException or SmtpProtocolException or SmtpCommandException or MailKit.ServiceNotConnectedException or OperationCanceledException)
                    {
                        return; // the server was killed under this client: what it did not confirm is not counted
                    }
                }
            }, Ct)).ToList();

            // Kill while mail is both arriving and leaving.
            var until = Stopwatch.StartNew();
            while (accepted.Count < 150 && until.Elapsed < TimeSpan.FromSeconds(90))
            {
                await Task.Delay(20, Ct);
            }

            Assert.True(accepted.Count >= 30, $"the burst never got going: {accepted.Count} accepted in {until.Elapsed}\n{serve.Stderr[^Math.Min(serve.Stderr.Length, 6000)..]}");
            Process.Start("kill", ["-KILL", serve.Pid.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();
            await stop.CancelAsync();
            await Task.WhenAll(clients);
            await serve.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            await serve.DisposeAsync();
        }

        var beforeRestart = rig.AllMessages().Count;
        await using (var again = Serve(data, config, submission, FreePort()))
        {
            await again.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));
            var expected = accepted.ToHashSet(StringComparer.Ordinal);
            var until = Stopwatch.StartNew();
            Dictionary<string, int> arrived;
            while (true)
            {
                arrived = rig.AllMessages().Select(m => Maildir.Header(m, "Message-ID")?.Trim('<', '>') ?? "")
                    .GroupBy(id => id, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
                if (expected.All(arrived.ContainsKey) || until.Elapsed > TimeSpan.FromSeconds(120))
                {
                    break;
                }

                await Task.Delay(200, Ct);
            }

            var missing = expected.Where(id => !arrived.ContainsKey(id)).ToList();
            var duplicates = arrived.Where(a => a.Value > 1).Sum(a => a.Value - 1);
            TestContext.Current.TestOutputHelper?.WriteLine(
                $"accepted {expected.Count}, delivered {arrived.Count} distinct ({arrived.Keys.Count(expected.Contains)} of the accepted), " +
                $"{beforeRestart} copies before the restart, duplicates {duplicates}, missing {missing.Count}");
            Assert.True(missing.Count == 0, $"accepted but never delivered: {string.Join(", ", missing.Take(10))}\n{again.Stderr}");

            // Nothing is left owed.
            until.Restart();
            string list;
            do
            {
                await Task.Delay(200, Ct);
                list = (await CliProcess.RunAsync("queue", "list", "--data", data)).Stdout;
            }
            while (!list.Contains("Mail queue is empty", StringComparison.Ordinal) && until.Elapsed < TimeSpan.FromSeconds(60));
            Assert.Contains("Mail queue is empty", list, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task QueueVerbs_ThroughTheRunningServer_ListHoldReleaseFlush_AndMetricsCountTheQueue()
    {
        if (PostfixRig.MissingReason is { } reason)
        {
            Assert.Skip(reason);
        }

        using var dir = new TempDirectory();
        var data = Path.Combine(dir.Path, "data");
        await using var rig = await PostfixRig.CreateAsync(Path.Combine(dir.Path, "postfix"), new PostfixRigOptions { Stopped = true });
        var config = await SetUpAsync(data, rig);
        int submission = FreePort(), http = FreePort();
        await using var serve = Serve(data, config, submission, http);
        await serve.WaitForOutputAsync("serving", TimeSpan.FromSeconds(60));
        Assert.Contains($"Delivery: relay smtp {rig.HostPort} (TLS None)", serve.Stderr, StringComparison.Ordinal);

        string id;
        using (var client = await ConnectAsync(data, submission))
        {
            var reply = await client.SendAsync(Message("verbs@test", "held@dest.test"), Ct);
            id = reply[(reply.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim();
            await client.DisconnectAsync(true, Ct);
        }

        // Deferred while the smarthost is down, with the reason.
        JsonElement shown = default;
        var until = Stopwatch.StartNew();
        do
        {
            await Task.Delay(200, Ct);
            var (c, o, e) = await CliProcess.RunAsync("queue", "show", id, "--json", "--data", data);
            Assert.True(c == 0, e);
            shown = JsonDocument.Parse(o).RootElement;
        }
        while (shown.GetProperty("attempts").GetInt32() < 1 && until.Elapsed < TimeSpan.FromSeconds(30));
        Assert.Equal(User, shown.GetProperty("user").GetString());
        Assert.Contains("connection refused", shown.GetProperty("last_error").GetString(), StringComparison.Ordinal);

        var (code, stdout, stderr) = await CliProcess.RunAsync("queue", "list", "--data", data);
        Assert.True(code == 0, stderr);
        Assert.Contains(id, stdout, StringComparison.Ordinal);
        Assert.Contains("held@dest.test  connect to " + rig.HostPort, stdout, StringComparison.Ordinal);
        Assert.Contains("-- 1 message,", stdout, StringComparison.Ordinal);

        Assert.Equal(0, (await CliProcess.RunAsync("queue", "hold", id, "--data", data)).ExitCode);
        (_, stdout, _) = await CliProcess.RunAsync("queue", "show", id, "--data", data);
        Assert.Contains("state:        held", stdout, StringComparison.Ordinal);
        using (var http2 = new HttpClient())
        {
            var metrics = await http2.GetStringAsync($"http://127.0.0.1:{http}/metrics", Ct);
            Assert.Contains("analytics_queue_messages{state=\"held\"} 1", metrics, StringComparison.Ordinal);
            Assert.Contains("analytics_delivery_recipients_total{outcome=\"deferred\"}", metrics, StringComparison.Ordinal);
            Assert.Contains("analytics_queue_oldest_seconds ", metrics, StringComparison.Ordinal);
        }

        (code, _, stderr) = await CliProcess.RunAsync("queue", "retry", id, "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("is held", stderr, StringComparison.Ordinal);
        (code, _, stderr) = await CliProcess.RunAsync("queue", "delete", "no-such-id", "--data", data);
        Assert.Equal(1, code);
        Assert.Contains("No message no-such-id", stderr, StringComparison.Ordinal);

        await rig.StartAsync();
        Assert.Equal(0, (await CliProcess.RunAsync("queue", "release", id, "--data", data)).ExitCode);
        Assert.Equal(0, (await CliProcess.RunAsync("queue", "flush", "--data", data)).ExitCode);
        await rig.WaitForMessagesAsync("held@dest.test", 1, TimeSpan.FromSeconds(60));
        until.Restart();
        do
        {
            await Task.Delay(200, Ct);
            (_, stdout, _) = await CliProcess.RunAsync("queue", "list", "--data", data);
        }
        while (!stdout.Contains("Mail queue is empty", StringComparison.Ordinal) && until.Elapsed < TimeSpan.FromSeconds(30));
        Assert.Contains("Mail queue is empty", stdout, StringComparison.Ordinal);

        serve.Terminate();
        Assert.Equal(0, await serve.WaitAsync(TimeSpan.FromSeconds(60)));
        (code, stdout, stderr) = await CliProcess.RunAsync("sql",
            "SELECT countIf(outcome = 'tempfail'), countIf(outcome = 'ok'), any(user) FROM events WHERE kind = 'delivery'", "--format", "tsv", "--data", data);
        Assert.True(code == 0, stderr);
        var row = stdout.Split('\n')[1].Split('\t');
        Assert.True(int.Parse(row[0], CultureInfo.InvariantCulture) >= 1, stdout);
        Assert.Equal(("1", User), (row[1], row[2]));
    }

    [Fact]
    public async Task Serve_BadDeliverySettings_FailBeforeAnyPortOpens()
    {
        using var dir = new TempDirectory();
        var config = Path.Combine(dir.Path, "bad.json");
        await File.WriteAllTextAsync(config, """{ "Delivery": { "Relay": { "Hosts": [ "smarthost.example" ] } } }""", Ct);
        var (code, stdout, stderr) = await CliProcess.RunAsync("serve", "--data", Path.Combine(dir.Path, "data"), "--config", config,
            "--submission", "127.0.0.1:0", "--mx", "127.0.0.1:0", "--http", "127.0.0.1:0");
        Assert.Equal(2, code);
        Assert.Contains("Delivery:Relay:Hosts: 'smarthost.example' is not HOST:PORT", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("serving", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("listening", stderr, StringComparison.Ordinal);
        Assert.Empty(stdout);
    }

    private static MimeMessage Message(string id, string to)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(User));
        message.To.Add(MailboxAddress.Parse(to));
        message.Subject = id;
        message.MessageId = id;
        message.Date = DateTimeOffset.UtcNow;
        message.Body = new TextPart("plain") { Text = "burst " + id + "\r\n" };
        return message;
    }

    private static async Task<SmtpClient> ConnectAsync(string data, int port)
    {
        using var expected = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(data, "keys", "smtp-self-signed.pfx"), null);
        var thumbprint = expected.GetCertHashString();
        var client = new SmtpClient { ServerCertificateValidationCallback = (_, c, _, _) => c?.GetCertHashString() == thumbprint, Timeout = 20_000 };
        await client.ConnectAsync("127.0.0.1", port, SecureSocketOptions.StartTls, Ct);
        await client.AuthenticateAsync(User, Password, Ct);
        return client;
    }
}
