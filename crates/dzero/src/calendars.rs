//! Business calendars as data: the bundled China calendar (`data/calendars/cn.json`, built
//! into the binary and loaded on start for every year the store does not have yet), and
//! `dzero calendar load`, which sends a JSON or CSV file to a running server year by year.
//!
//! JSON: `{"id": "cn", "years": [{"year": 2026, "source": "…", "holidays": ["2026-01-01", …],
//! "workdays": ["2026-01-04", …]}]}`.
//! CSV: a header line `calendar,date,kind,source`, then one line per date with kind `holiday`
//! or `workday`; the year is the date's.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use domain::{CalendarYear, Command, Date};
use serde_json::Value;

/// The China calendar shipped with dzero.
pub const BUNDLED_CN: &str = include_str!("../../../data/calendars/cn.json");

/// One calendar year read from a file: (calendar id, year data).
pub type YearOf = (String, CalendarYear);

fn date(text: &str) -> anyhow::Result<Date> {
    Date::parse(text.trim()).with_context(|| format!("{text:?} is not a date YYYY-MM-DD"))
}

/// Reads the JSON form.
pub fn parse_json(text: &str) -> anyhow::Result<Vec<YearOf>> {
    let value: Value = serde_json::from_str(text).context("calendar JSON")?;
    let id = value["id"]
        .as_str()
        .context("calendar JSON needs an id")?
        .to_owned();
    let years = value["years"]
        .as_array()
        .context("calendar JSON needs years")?;
    years
        .iter()
        .map(|y| {
            let year = i32::try_from(y["year"].as_i64().context("a year needs year")?)?;
            let dates = |key: &str| -> anyhow::Result<_> {
                y[key]
                    .as_array()
                    .with_context(|| format!("year {year} needs {key}"))?
                    .iter()
                    .map(|d| date(d.as_str().unwrap_or_default()))
                    .collect()
            };
            Ok((
                id.clone(),
                CalendarYear {
                    year,
                    holidays: dates("holidays")?,
                    workdays: dates("workdays")?,
                    source: y["source"].as_str().unwrap_or_default().to_owned(),
                },
            ))
        })
        .collect()
}

/// Reads the CSV form.
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<YearOf>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("empty CSV")?;
    if header.trim() != "calendar,date,kind,source" {
        bail!("the CSV header must be calendar,date,kind,source");
    }
    let mut years: BTreeMap<(String, i32), CalendarYear> = BTreeMap::new();
    for (number, line) in lines.enumerate() {
        let fields: Vec<&str> = line.splitn(4, ',').collect();
        let [calendar, day, kind, source] = fields[..] else {
            bail!("line {}: four fields expected", number + 2);
        };
        let day = date(day)?;
        let year = years
            .entry((calendar.trim().to_owned(), day.year()))
            .or_insert_with(|| CalendarYear {
                year: day.year(),
                holidays: Default::default(),
                workdays: Default::default(),
                source: source.trim().to_owned(),
            });
        match kind.trim() {
            "holiday" => year.holidays.insert(day),
            "workday" => year.workdays.insert(day),
            other => bail!(
                "line {}: kind {other:?} is not holiday or workday",
                number + 2
            ),
        };
    }
    Ok(years
        .into_iter()
        .map(|((calendar, _), year)| (calendar, year))
        .collect())
}

/// Commands that load the bundled years the platform does not have yet.
pub fn bundled_missing(platform: &domain::Platform) -> anyhow::Result<Vec<Command>> {
    Ok(parse_json(BUNDLED_CN)?
        .into_iter()
        .filter(|(id, year)| {
            platform
                .calendar(id)
                .is_none_or(|c| !c.years.contains_key(&year.year))
        })
        .map(|(calendar_id, year)| Command::LoadCalendarYear { calendar_id, year })
        .collect())
}

/// Options of `dzero calendar load`.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    /// A JSON or CSV file (by its extension).
    pub file: std::path::PathBuf,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:7300")]
    pub server: std::net::SocketAddr,
    /// An API key with the admin scope; default: `<data-dir>/admin.key`.
    #[arg(long)]
    pub key: Option<String>,
    /// Where to find admin.key when --key is not given.
    #[arg(long, default_value = "./dzero-data")]
    pub data_dir: std::path::PathBuf,
}

/// Sends every year of the file to the server, replacing what it had for those years.
pub async fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let years = if args.file.extension().is_some_and(|e| e == "csv") {
        parse_csv(&text)?
    } else {
        parse_json(&text)?
    };
    let key = match &args.key {
        Some(key) => key.clone(),
        None => std::fs::read_to_string(args.data_dir.join("admin.key"))
            .context("reading admin.key (or pass --key)")?
            .trim()
            .to_owned(),
    };
    let mut client = crate::client::HttpClient::connect(args.server)
        .await?
        .with_key(&key);
    for (calendar, year) in years {
        let body = serde_json::json!({
            "holidays": year.holidays.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "workdays": year.workdays.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "source": year.source,
        });
        let response = client
            .post(
                &format!("/v1/calendars/{calendar}/years/{}", year.year),
                &body,
            )
            .await?;
        if response.status != 200 {
            bail!(
                "loading {calendar} {}: {} {}",
                year.year,
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        println!(
            "loaded {calendar} {}: {} holidays, {} working weekend days",
            year.year,
            year.holidays.len(),
            year.workdays.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_calendar_has_2025_and_2026_with_known_days() {
        let years = parse_json(BUNDLED_CN).expect("bundled calendar parses");
        let mut calendar = domain::Calendar::new("cn");
        for (_, year) in years {
            calendar.load_year(year).expect("valid year");
        }
        let day = |d: &str| Date::parse(d).expect("date");
        assert_eq!(
            calendar.is_business_day(day("2026-02-14")),
            Ok(true),
            "make-up Saturday"
        );
        assert_eq!(
            calendar.is_business_day(day("2026-02-16")),
            Ok(false),
            "Spring Festival"
        );
        assert_eq!(
            calendar.is_business_day(day("2025-10-08")),
            Ok(false),
            "National Day"
        );
        assert_eq!(
            calendar.is_business_day(day("2025-09-28")),
            Ok(true),
            "make-up Sunday"
        );
        assert!(
            calendar.is_business_day(day("2027-01-04")).is_err(),
            "2027 is not out yet"
        );
    }

    #[test]
    fn csv_and_json_forms_agree() {
        let csv = "calendar,date,kind,source\ncn,2026-02-16,holiday,notice\ncn,2026-02-14,workday,notice\n";
        let years = parse_csv(csv).expect("parses");
        assert_eq!(years.len(), 1);
        assert_eq!(years[0].1.holidays.len(), 1);
        assert_eq!(years[0].1.workdays.len(), 1);
        assert!(parse_csv("date\n2026-01-01").is_err());
        assert!(parse_csv("calendar,date,kind,source\ncn,2026-01-01,party,x").is_err());
    }
}
