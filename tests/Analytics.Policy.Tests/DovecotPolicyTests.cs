using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Analytics.Events;
using Analytics.Limits;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Policy.Tests;

public sealed class DovecotRequestTests
{
    [Fact]
    public void TryParse_DovecotsOwnBody_ReadsEveryField()
    {
        var body = """{"device_id":"","login":"alice@example.test","mech":"PLAIN","protocol":"smtp","pwhash":"05f6","pwtag":"14d1a9e2","remote":"127.40.0.7","session_id":"s1","success":false,"policy_reject":false,"tls":true,"attrs":{"cos":"x"}}""";

        Assert.True(DovecotRequest.TryParse("report", Encoding.UTF8.GetBytes(body), out var request, out _));

        Assert.Equal("alice@example.test", request.Login);
        Assert.Equal("127.40.0.7", request.Remote);
        Assert.Equal("05f6", request.PasswordHash);
        Assert.Equal("14d1a9e2", request.PasswordTag);
        Assert.Equal("PLAIN", request.Mechanism);
        Assert.False(request.Success);
        Assert.True(request.Tls);
    }

    [Theory]
    [InlineData("")]
    [InlineData("not json at all")]
    [InlineData("[1,2,3]")]
    [InlineData("{\"login\":\"a\",")]
    [InlineData("{\"login\":\"a\"} trailing")]
    public void TryParse_Garbage_IsAClearError(string body)
    {
        Assert.False(DovecotRequest.TryParse("allow", Encoding.UTF8.GetBytes(body), out _, out var error));
        Assert.NotEmpty(error);
    }
}

/// <summary>The auth policy server over loopback HTTP, engine in process (no Dovecot): what Dovecot would be told.</summary>
public sealed class DovecotPolicyServerTests : IAsyncLifetime
{
    private readonly EventLog _events = new();
    private DovecotPolicyServer _server = null!;

    public ValueTask InitializeAsync() => StartAsync();

    private async ValueTask StartAsync(PolicyOptions? options = null, LimitsOptions? limits = null)
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }

        options ??= new PolicyOptions();
        options.DovecotEndpoint = "127.0.0.1:0";
        var engine = Engines.Create(_events, options, limits);
        _server = new DovecotPolicyServer(engine, PolicyEndpoint.Parse(options.DovecotEndpoint, allowUnix: false), NullLogger.Instance);
        _server.Start();
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private HttpClient Http() => new() { BaseAddress = new Uri(_server.Url) };

    private static string Body(string login, string remote, string pwtag = "", string pwhash = "0abc", bool? success = null, bool policyReject = false)
    {
        var fields = new Dictionary<string, object>
        {
            ["login"] = login, ["remote"] = remote, ["pwhash"] = pwhash, ["protocol"] = "imap", ["session_id"] = Guid.NewGuid().ToString("N"), ["mech"] = "PLAIN", ["tls"] = true,
        };
        if (pwtag.Length > 0)
        {
            fields["pwtag"] = pwtag;
        }

        if (success is { } s)
        {
            fields["success"] = s;
            fields["policy_reject"] = policyReject;
        }

        return JsonSerializer.Serialize(fields);
    }

    private static async Task<(int Status, string Message)> PostAsync(HttpClient http, string command, string body)
    {
        using var response = await http.PostAsync("?command=" + command, new StringContent(body, Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct));
        return (json.RootElement.GetProperty("status").GetInt32(), json.RootElement.GetProperty("msg").GetString() ?? "");
    }

    /// <summary>One login attempt as Dovecot makes it: allow, then (when allowed) the password check, then the report.</summary>
    private static async Task<int> LoginAsync(HttpClient http, string login, string remote, bool correct, string pwtag = "", string pwhash = "0abc")
    {
        var (status, _) = await PostAsync(http, "allow", Body(login, remote, pwtag, pwhash));
        var refused = status < 0;
        await PostAsync(http, "report", Body(login, remote, pwtag, pwhash, success: !refused && correct, policyReject: refused));
        return status;
    }

    [Fact]
    public async Task GarbageBody_IsAnsweredAllow_WithTheReason()
    {
        using var http = Http();

        var (status, message) = await PostAsync(http, "allow", "{\"login\": nope");

        Assert.Equal(0, status);
        Assert.Contains("malformed", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task FailedLogins_LockTheAccount_AndTheNextAllowIsRejected()
    {
        using var http = Http();
        var statuses = new List<int>();
        for (var i = 0; i < 7; i++)
        {
            statuses.Add(await LoginAsync(http, "victim@example.test", "127.41.0." + (i + 1), correct: false, pwhash: "h" + i));
        }

        Assert.Equal([0, 0, 0, 0, 0, -1, -1], statuses);
        var auth = _events.Of(EventKind.Auth).ToList();
        Assert.Equal(7, auth.Count);
        Assert.All(auth, e => Assert.Equal("dovecot", e.Node));
        Assert.Equal(5, auth.Count(e => e.ReplyCode == 535));
        Assert.Equal(2, auth.Count(e => e.ReplyCode == 454));
        Assert.Contains(_events.Of(EventKind.Throttle), e => e.Detail.StartsWith("lock user", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OnePasswordOverManyAccounts_IsBurned_WhenDovecotSendsThePasswordTag()
    {
        using var http = Http();
        var statuses = new List<int>();
        for (var i = 0; i < 50; i++)
        {
            statuses.Add(await LoginAsync(http, $"user{i}@example.test", "127.42.0." + (1 + (i % 3)), correct: false, pwtag: "14d1a9e2d5767a19", pwhash: "p" + i));
        }

        Assert.Equal([0, 0, 0], statuses.Take(3));
        Assert.All(statuses.Skip(3), s => Assert.Equal(-1, s));
        Assert.Contains(_events.Of(EventKind.Throttle), e => e.Detail == "refuse a password tried against too many accounts");

        // Only that password is burned: another one, from elsewhere, goes on.
        Assert.Equal(0, await LoginAsync(http, "someone@example.test", "127.43.0.1", correct: true, pwtag: "ffff0000ffff0000"));
    }

    [Fact]
    public async Task OnePasswordOverManyAccounts_IsNotSeen_FromTheLoginBoundHashAlone()
    {
        using var http = Http();
        var statuses = new List<int>();
        for (var i = 0; i < 6; i++)
        {
            statuses.Add(await LoginAsync(http, $"other{i}@example.test", "127.44." + i + ".1", correct: false, pwhash: "h" + i));
        }

        Assert.All(statuses, s => Assert.Equal(0, s));
    }

    [Fact]
    public async Task ApiKey_WhenConfigured_IsRequired()
    {
        await StartAsync(new PolicyOptions { DovecotApiKey = "s3cret" });
        using var http = Http();

        using var without = await http.PostAsync("?command=allow", new StringContent(Body("a@x", "127.0.0.1")), Ct);
        using var request = new HttpRequestMessage(HttpMethod.Post, "?command=allow") { Content = new StringContent(Body("a@x", "127.0.0.1")) };
        request.Headers.Add("X-API-Key", "s3cret");
        using var with = await http.SendAsync(request, Ct);

        Assert.Equal(HttpStatusCode.Unauthorized, without.StatusCode);
        Assert.Equal(HttpStatusCode.OK, with.StatusCode);
    }

    [Theory]
    [InlineData("GET /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n", 405)]
    [InlineData("POST /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n", 411)]
    [InlineData("POST /?command=allow HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501)]
    [InlineData("POST /?command=allow HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413)]
    [InlineData("HELLO\r\n\r\n", 400)]
    public async Task MalformedHttp_GetsAClearStatus_AndTheServerGoesOn(string request, int expected)
    {
        var endpoint = IPEndPoint.Parse(new Uri(_server.Url).Authority);
        using (var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await socket.ConnectAsync(endpoint, Ct);
            await socket.SendAsync(Encoding.ASCII.GetBytes(request), Ct);
            var buffer = new byte[1024];
            var n = await socket.ReceiveAsync(buffer, Ct);
            Assert.StartsWith("HTTP/1.1 " + expected, Encoding.ASCII.GetString(buffer, 0, n), StringComparison.Ordinal);
        }

        using var http = Http();
        Assert.Equal(0, (await PostAsync(http, "allow", Body("fine@example.test", "127.45.0.1"))).Status);
    }
}
