using System.CommandLine;
using System.Globalization;
using System.Text;
using Analytics.Store;
using Spectre.Console;

namespace Analytics.Cli.Commands;

/// <summary><c>analytics sql "QUERY"</c>: the clickhouse-client an embedded deployment does not have.</summary>
internal static class SqlCommand
{
    public static Command Create(CommandContext context)
    {
        var query = new Argument<string>("query") { Description = "SQL to run (ClickHouse dialect); '-' reads it from stdin" };
        var format = new Option<string>("--format", "-f")
        {
            Description = "table (default), tsv, csv, json (one object per line), or any ClickHouse output format name",
            DefaultValueFactory = _ => "table",
        };
        var command = new Command("sql", "Run a query against the store (through the running server when it owns the data directory)")
        {
            query,
            format,
        };
        command.SetAction((parse, cancellationToken) => context.WithStoreAsync(parse, async store =>
        {
            var sql = parse.GetRequiredValue(query);
            if (sql == "-")
            {
                sql = await context.IO.In.ReadToEndAsync(cancellationToken);
            }

            if (string.IsNullOrWhiteSpace(sql))
            {
                throw new CliException("The query is empty.");
            }

            try
            {
                return await RunAsync(store, sql, parse.GetValue(format) ?? "table", context.IO, cancellationToken);
            }
            catch (ClickHouseException ex)
            {
                throw new CliException(ex.Message, 3);
            }
        }, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(IClickHouseStore store, string sql, string format, CliIO io, CancellationToken cancellationToken)
    {
        var chFormat = format.ToLowerInvariant() switch
        {
            "table" => null,
            "tsv" => "TabSeparatedWithNames",
            "csv" => "CSVWithNames",
            "json" => "JSONEachRow",
            _ => format,
        };
        if (chFormat is not null)
        {
            var bytes = await store.QueryFormattedAsync(sql, chFormat, null, cancellationToken);
            await io.Out.WriteAsync(Encoding.UTF8.GetString(bytes));
            await io.Out.FlushAsync(cancellationToken);
            return 0;
        }

        var result = await store.QueryAsync(sql, null, cancellationToken);
        if (result.Columns.Count == 0)
        {
            await io.Out.WriteLineAsync("OK");
            return 0;
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(io.Out),
            Ansi = ReferenceEquals(io.Out, Console.Out) && !Console.IsOutputRedirected ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = ColorSystemSupport.Detect,
        });
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var column in result.Columns)
        {
            table.AddColumn(new TableColumn(Markup.Escape(column.Name)));
        }

        foreach (var row in result.Rows)
        {
            table.AddRow(row.Select(v => new Text(Render(v))).ToArray());
        }

        console.Write(table);
        await io.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{result.Rows.Count} row{(result.Rows.Count == 1 ? "" : "s")}"));
        return 0;
    }

    private static string Render(object? value) => value switch
    {
        null => "NULL",
        DateTime dt => dt.ToString("yyyy-MM-dd HH:mm:ss.fff", CultureInfo.InvariantCulture),
        object?[] array => "[" + string.Join(", ", array.Select(Render)) + "]",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
