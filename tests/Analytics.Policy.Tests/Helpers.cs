using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Analytics.Events;
using Analytics.Limits;

namespace Analytics.Policy.Tests;

/// <summary>Every event the engine publishes, in order, for assertions.</summary>
internal sealed class EventLog : IEventPublisher
{
    private readonly ConcurrentQueue<SmtpEvent> _events = new();

    public bool Publish(SmtpEvent smtpEvent)
    {
        _events.Enqueue(smtpEvent);
        return true;
    }

    public ValueTask<bool> WaitDurableAsync(TimeSpan timeout, CancellationToken cancellationToken = default) => ValueTask.FromResult(true);

    public IReadOnlyList<SmtpEvent> All => [.. _events];

    public IEnumerable<SmtpEvent> Of(EventKind kind) => _events.Where(e => e.Kind == kind);

    public async Task<SmtpEvent> WaitForAsync(Func<SmtpEvent, bool> match, TimeSpan timeout, string what)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            if (_events.FirstOrDefault(match) is { } found)
            {
                return found;
            }

            if (watch.Elapsed > timeout)
            {
                throw new TimeoutException($"No event {what} within {timeout}. Events:\n" + string.Join('\n', _events.Select(Describe)));
            }

            await Task.Delay(20);
        }
    }

    public static string Describe(SmtpEvent e) =>
        $"{e.Node} {e.Role} {e.Kind} {e.ClientIp} user={e.User} {e.ReplyCode} {e.Status} rcpt={e.Recipient} detail={e.Detail}";
}

internal static class Engines
{
    public static PolicyEngine Create(EventLog events, PolicyOptions? options = null, LimitsOptions? limits = null, TimeProvider? time = null, ILimitBook? book = null)
    {
        limits ??= new LimitsOptions();
        time ??= TimeProvider.System;
        return new PolicyEngine(options ?? new PolicyOptions(), limits, book ?? new LimitBook(limits, time), events, time);
    }
}

/// <summary>A Postfix smtpd's side of the policy protocol over one connection: attributes out, the action back.</summary>
internal sealed class PolicyClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    private PolicyClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, Encoding.UTF8);
    }

    public static async Task<PolicyClient> ConnectAsync(string address)
    {
        Socket socket;
        if (address.StartsWith("unix:", StringComparison.Ordinal))
        {
            socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(address[5..]));
        }
        else
        {
            socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(System.Net.IPEndPoint.Parse(address));
        }

        return new PolicyClient(socket);
    }

    /// <summary>A request as Postfix 3.7 sends it, with the given attributes over the defaults; returns the action.</summary>
    public async Task<string> AskAsync(params (string Name, string Value)[] attributes)
    {
        var values = new Dictionary<string, string>(Defaults);
        foreach (var (name, value) in attributes)
        {
            values[name] = value;
        }

        var text = new StringBuilder();
        foreach (var (name, value) in values)
        {
            text.Append(name).Append('=').Append(value).Append('\n');
        }

        text.Append('\n');
        return await SendRawAsync(Encoding.UTF8.GetBytes(text.ToString()));
    }

    public async Task<string> SendRawAsync(byte[] bytes)
    {
        await _stream.WriteAsync(bytes);
        return await ReadActionAsync();
    }

    public async Task WriteAsync(byte[] bytes) => await _stream.WriteAsync(bytes);

    public void ShutdownSend() => _socket.Shutdown(SocketShutdown.Send);

    public async Task<string> ReadActionAsync()
    {
        var line = await _reader.ReadLineAsync() ?? throw new IOException("the policy service closed the connection");
        var empty = await _reader.ReadLineAsync();
        Assert.Equal("", empty);
        Assert.StartsWith("action=", line, StringComparison.Ordinal);
        return line[7..];
    }

    private static readonly Dictionary<string, string> Defaults = new()
    {
        ["request"] = "smtpd_access_policy",
        ["protocol_state"] = "RCPT",
        ["protocol_name"] = "ESMTP",
        ["client_address"] = "127.0.0.1",
        ["client_name"] = "unknown",
        ["client_port"] = "40000",
        ["reverse_client_name"] = "unknown",
        ["server_address"] = "127.0.0.1",
        ["server_port"] = "25",
        ["helo_name"] = "client.example",
        ["sender"] = "someone@example.net",
        ["recipient"] = "alice@example.test",
        ["recipient_count"] = "0",
        ["queue_id"] = "",
        ["instance"] = "1.1.1.0",
        ["size"] = "0",
        ["etrn_domain"] = "",
        ["stress"] = "",
        ["sasl_method"] = "",
        ["sasl_username"] = "",
        ["sasl_sender"] = "",
        ["ccert_subject"] = "",
        ["ccert_issuer"] = "",
        ["ccert_fingerprint"] = "",
        ["ccert_pubkey_fingerprint"] = "",
        ["encryption_protocol"] = "",
        ["encryption_cipher"] = "",
        ["encryption_keysize"] = "0",
        ["policy_context"] = "",
    };

    public async ValueTask DisposeAsync()
    {
        _reader.Dispose();
        await _stream.DisposeAsync();
    }
}
